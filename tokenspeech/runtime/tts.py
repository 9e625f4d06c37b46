"""ONNX Runtime adapters from an exported TTS model to the NumPy decoding protocols.

:class:`OnnxTtsBackend` is a :class:`tokenspeech.tts.backend.TtsBackend`, the
twin of :class:`tokenspeech.tts.torch_backend.TorchTtsBackend`: the same
:class:`tokenspeech.tts.pipeline.Synthesizer` and decoding strategies run
over it. Its adapters:

- :class:`OnnxMaskedModel`: ``MaskedModel`` over ``tts_masked`` (whole sentence)
- :class:`OnnxBlockModel`: ``BlockModel`` over ``tts_block`` (KV cache of committed blocks)
- :class:`OnnxArStep`: ``StepModel`` over ``tts_ar_step`` (first codebook, KV cache)

Caches are dicts from the graphs' ``cache_in`` names to arrays; with I/O
binding (CUDA) they stay on the device between steps.

Each adapter is also a :class:`tokenspeech.decoding.calls.BatchedModel`, but
only for sessions at the same position: the exported graphs take one past
length for the whole batch and no padding mask, so calls batch when their
shapes agree (same sentence length; same block start, size and cache
length; same AR position), stacked along the batch axis with nothing padded.
Host (NumPy) caches only.

Axes: B batch, N phonemes, F frames, S new frames, K codebooks, V codebook size, D dim.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.decoding.calls import Call, row_slices
from tokenspeech.decoding.masked import MASK, Side, keep_state, run_sided, sides
from tokenspeech.errors import ConfigError
from tokenspeech.export.manifest import TtsNames, cache_names
from tokenspeech.runtime.codec import zeros_for
from tokenspeech.runtime.manifest import ExportDirectory, GraphSet
from tokenspeech.runtime.sessions import Graph, RuntimeOptions, host
from tokenspeech.text.vocab import Vocabulary
from tokenspeech.tts.backend import Conditioning

Cache = dict[str, Any]


def _past(cache: Cache | None) -> int | None:
    """The cached length of a host cache; None for a device cache (or none), which is not batched."""
    if cache is None or not all(isinstance(v, np.ndarray) for v in cache.values()):
        return None
    return next(iter(cache.values())).shape[2] if cache else 0


def _stack(caches: Sequence[Cache]) -> Cache:
    return {name: np.concatenate([c[name] for c in caches]) for name in caches[0]}


def _rows(cache: Cache, rows: slice) -> Cache:
    return {name: value[rows] for name, value in cache.items()}


@dataclass(frozen=True)
class OnnxTtsInfo:
    """What the pipeline reads from the model card (:class:`tokenspeech.tts.backend.TtsModelInfo`)."""

    phonemes: Vocabulary
    voices: tuple[str, ...]
    codec: CodecInfo
    g2p_language: str
    codebooks: int


class _CachedGraph:
    """A step graph whose ``cache_out.*`` outputs feed its ``cache_in.*`` inputs next time."""

    def __init__(self, graph: Graph, names: TtsNames, layers: int) -> None:
        self.graph = graph
        self.cache_in = cache_names(names.cache_in, layers)
        self.cache_out = cache_names(names.cache_out, layers)

    def empty(self, batch: int) -> Cache:
        return zeros_for(self.graph, self.cache_in, batch)

    def run(self, feeds: dict[str, Any], cache: Cache) -> tuple[dict[str, Any], Cache]:
        outputs = self.graph.run({**feeds, **cache}, keep=self.cache_out)
        return outputs, {i: outputs[o] for i, o in zip(self.cache_in, self.cache_out)}


class OnnxTtsBackend:
    """The networks of an exported TTS model; see the module docstring."""

    def __init__(self, export: ExportDirectory, options: RuntimeOptions = RuntimeOptions()) -> None:
        entry = export.model("tts")
        self.entry = entry
        self.names: TtsNames = export.names("tts")
        self.graphs: GraphSet = export.graphs("tts", options)
        config = entry["config"]
        self.info = OnnxTtsInfo(Vocabulary.from_json(entry["phoneme_vocabulary"]), tuple(entry["voices"]),
                                CodecInfo.from_json(entry["codec"]), entry["g2p"]["language"],
                                int(config["num_codebooks"]))
        self.context_codebooks = int(config["context_codebooks"])
        self.mask_id = int(entry["mask_id"])

    @property
    def num_codebooks(self) -> int:
        return self.info.codebooks

    def condition(self, phonemes: np.ndarray, voice: int, rate: float = 1.0,
                  durations: np.ndarray | None = None) -> Conditioning:
        names = self.names
        ids = np.asarray(phonemes, dtype=np.int64)[None]
        speaker = np.array([voice], dtype=np.int64)
        text = self.graphs[names.text].run({names.phonemes: ids, names.voice: speaker,
                                            names.rate: np.array(rate, dtype=np.float32)})
        frames = text[names.durations] if durations is None else np.asarray(durations, dtype=np.int64)[None]
        cond = self.graphs[names.condition].run({names.hidden: text[names.hidden], names.durations: frames,
                                                 names.voice: speaker})[names.cond]
        return Conditioning(cond, frames[0].copy())

    def unconditional(self, cond: np.ndarray) -> np.ndarray:
        return self.graphs[self.names.unconditional].run({self.names.cond: cond})[self.names.uncond]

    def masked(self) -> OnnxMaskedModel:
        return OnnxMaskedModel(self)

    def blocks(self) -> OnnxBlockModel:
        return OnnxBlockModel(self)

    def ar(self) -> OnnxArStep:
        if not self.graphs.has(self.names.ar_step):
            raise ConfigError("this TTS model has no AR codec LM (ar_layers = 0); use decoder nar or semiar")
        return OnnxArStep(self)


@dataclass(frozen=True)
class MaskedState:
    """Conditioning ``[B, F, D]`` and its unconditional twin for whole-sequence passes."""

    cond: np.ndarray
    uncond: np.ndarray


class OnnxMaskedModel:
    """MaskedModel over ``tts_masked`` (full attention)."""

    def __init__(self, backend: OnnxTtsBackend) -> None:
        self.backend = backend
        self.graph = backend.graphs[backend.names.masked]

    def prepare(self, cond: np.ndarray) -> MaskedState:
        return MaskedState(cond, self.backend.unconditional(cond))

    def logits(self, tokens: np.ndarray, codebooks: Sequence[int], state: MaskedState,
               unconditional: Side = False) -> tuple[np.ndarray, MaskedState]:
        if sides(unconditional) == (False, True):
            return self.run_batch([Call(self.logits, (tokens, codebooks, state, unconditional))])[0]
        names = self.backend.names
        feeds = {names.codes: np.ascontiguousarray(tokens, dtype=np.int64),
                 names.cond: state.uncond if unconditional else state.cond,
                 names.codebooks: np.asarray(codebooks, dtype=np.int64)}
        return self.graph.run(feeds)[names.logits], state

    def batch_key(self, call: Call) -> Hashable | None:
        """Passes asking for the same codebooks over sentences of the same length."""
        if call.method != self.logits:
            return None
        return self.backend, "masked", tuple(call.args[1]), call.args[0].shape[2]

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, MaskedState]]:
        """The calls (both sides of a guided one) stacked along the batch axis: one graph run."""
        return run_sided(calls, 3, self._run_one_sided, keep_state)

    def _run_one_sided(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, MaskedState]]:
        names = self.backend.names
        tokens = [np.asarray(call.args[0], dtype=np.int64) for call in calls]
        feeds = {names.codes: np.concatenate(tokens),
                 names.cond: np.concatenate([c.args[2].uncond if c.args[3] else c.args[2].cond for c in calls]),
                 names.codebooks: np.asarray(calls[0].args[1], dtype=np.int64)}
        logits = self.graph.run(feeds)[names.logits]
        return [(logits[rows], call.args[2]) for rows, call in zip(row_slices(tokens), calls)]


@dataclass(frozen=True)
class _Pending:
    """The cache a block pass produced, kept until :meth:`OnnxBlockModel.commit` may reuse it."""

    start: int
    tokens: np.ndarray  # [B, K, S] the pass' input
    cache: Cache


@dataclass(frozen=True)
class BlockState:
    """Committed context of one stream: KV caches (conditional and, with guidance, unconditional)."""

    cond: np.ndarray  # [B, F, D]
    uncond: np.ndarray | None
    cache: Cache
    uncond_cache: Cache | None
    pending: _Pending | None = None
    pending_uncond: _Pending | None = None


def _both_pending(conditional: BlockState, unconditional: BlockState) -> BlockState:
    """The state after a guided pass: what each side's pass wrote, for :meth:`OnnxBlockModel.commit`."""
    return replace(conditional, pending_uncond=unconditional.pending_uncond)


class OnnxBlockModel:
    """BlockModel over ``tts_block``; committed blocks show their first ``context_codebooks`` codebooks.

    As in the PyTorch adapter, when the last pass of a block had exactly the
    committed input its cache is reused, so committing costs no extra pass.
    """

    def __init__(self, backend: OnnxTtsBackend) -> None:
        self.backend = backend
        self.step = _CachedGraph(backend.graphs[backend.names.block], backend.names,
                                 int(backend.entry["layers"]["codec"]))

    def prepare(self, cond: np.ndarray, guidance: bool = False) -> BlockState:
        batch = cond.shape[0]
        uncond = self.backend.unconditional(cond) if guidance else None
        return BlockState(cond, uncond, self.step.empty(batch), self.step.empty(batch) if guidance else None)

    def _pass(self, tokens: np.ndarray, codebooks: Sequence[int], cond: np.ndarray,
              cache: Cache) -> tuple[np.ndarray, Cache]:
        """``tokens [B, K, S]`` with their conditioning ``cond [B, S, D]`` after the cached frames."""
        names = self.backend.names
        feeds = {names.codes: np.ascontiguousarray(tokens, dtype=np.int64), names.cond: np.ascontiguousarray(cond),
                 names.codebooks: np.asarray(codebooks, dtype=np.int64)}
        outputs, new_cache = self.step.run(feeds, cache)
        return outputs[names.logits], new_cache

    def block_logits(self, tokens: np.ndarray, start: int, codebooks: Sequence[int], state: BlockState,
                     unconditional: Side = False) -> tuple[np.ndarray, BlockState]:
        call = Call(self.block_logits, (tokens, start, codebooks, state, unconditional))
        if sides(unconditional) == (False, True):
            if self.batch_key(call) is not None:  # host caches: both sides as one graph run
                return self.run_batch([call])[0]
            return run_sided([call], 4, lambda one_sided: [c.run() for c in one_sided], _both_pending)[0]
        if unconditional and state.uncond is None:
            raise RuntimeError("prepare the block state with guidance=True to use guidance")
        cond, cache = (state.uncond, state.uncond_cache) if unconditional else (state.cond, state.cache)
        logits, new_cache = self._pass(tokens, codebooks, cond[:, start:start + tokens.shape[2]], cache)
        pending = _Pending(start, np.array(tokens, dtype=np.int64), new_cache)
        state = replace(state, pending_uncond=pending) if unconditional else replace(state, pending=pending)
        return logits, state

    def batch_key(self, call: Call) -> Hashable | None:
        """Passes asking for the same codebooks of same-sized blocks at the same start over host caches."""
        if call.method != self.block_logits:
            return None
        tokens, start, codebooks, state, unconditional = call.args
        pasts = {_past(state.uncond_cache if side else state.cache) for side in sides(unconditional)}
        past = pasts.pop() if len(pasts) == 1 else None  # both sides of a guided pass: one cache length
        return None if past is None else (self.backend, "block", tuple(codebooks), start, tokens.shape[2], past)

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, BlockState]]:
        """The calls (both caches of a guided one) stacked along the batch axis: one graph run."""
        return run_sided(calls, 4, self._run_one_sided, _both_pending)

    def _run_one_sided(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, BlockState]]:
        tokens = [np.asarray(call.args[0], dtype=np.int64) for call in calls]
        start, length = calls[0].args[1], tokens[0].shape[2]
        conds, caches = [], []
        for _, _, _, state, unconditional in (call.args for call in calls):
            cond, cache = (state.uncond, state.uncond_cache) if unconditional else (state.cond, state.cache)
            conds.append(cond[:, start:start + length])
            caches.append(cache)
        logits, new_cache = self._pass(np.concatenate(tokens), calls[0].args[2], np.concatenate(conds),
                                       _stack(caches))
        results = []
        for rows, call in zip(row_slices(tokens), calls):
            tokens_, _, _, state, unconditional = call.args
            pending = _Pending(start, np.array(tokens_, dtype=np.int64), _rows(new_cache, rows))
            state = replace(state, pending_uncond=pending) if unconditional else replace(state, pending=pending)
            results.append((logits[rows], state))
        return results

    def commit(self, tokens: np.ndarray, start: int, state: BlockState) -> BlockState:
        view = np.array(tokens, dtype=np.int64)
        view[:, self.backend.context_codebooks:] = MASK
        cache = self._extend(view, start, state.cond, state.cache, state.pending)
        uncond_cache = None if state.uncond is None else self._extend(view, start, state.uncond,
                                                                      state.uncond_cache, state.pending_uncond)
        return BlockState(state.cond, state.uncond, cache, uncond_cache)

    def _extend(self, view: np.ndarray, start: int, cond: np.ndarray, cache: Cache,
                pending: _Pending | None) -> Cache:
        if pending is not None and pending.start == start and np.array_equal(pending.tokens, view):
            return pending.cache
        return self._pass(view, (0,), cond[:, start:start + view.shape[2]], cache)[1]


@dataclass(frozen=True)
class ArState:
    """AR LM context: conditioning ``[B, F, D]``, KV cache, next frame index."""

    cond: np.ndarray
    cache: Cache
    position: int


class OnnxArStep:
    """StepModel over ``tts_ar_step``: tokens are the previous first-codebook codes (``V`` = BOS)."""

    def __init__(self, backend: OnnxTtsBackend) -> None:
        self.backend = backend
        self.step_graph = _CachedGraph(backend.graphs[backend.names.ar_step], backend.names,
                                       int(backend.entry["layers"]["ar"]))

    @property
    def bos_id(self) -> int:
        return self.backend.mask_id

    def prepare(self, cond: np.ndarray) -> ArState:
        return ArState(cond, self.step_graph.empty(cond.shape[0]), 0)

    def step(self, tokens: np.ndarray, state: ArState) -> tuple[np.ndarray, ArState]:
        names = self.backend.names
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        cond = np.ascontiguousarray(state.cond[:, state.position:state.position + tokens.shape[1]])
        outputs, cache = self.step_graph.run({names.tokens: tokens, names.cond: cond}, state.cache)
        return outputs[names.logits], ArState(state.cond, cache, state.position + tokens.shape[1])

    def batch_key(self, call: Call) -> Hashable | None:
        """Steps of the same number of tokens at the same position over host caches."""
        if call.method != self.step:
            return None
        tokens, state = call.args
        past = _past(state.cache)
        return None if past is None else (self.backend, "ar", tokens.shape[1], state.position, past)

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, ArState]]:
        names = self.backend.names
        tokens = [np.asarray(call.args[0], dtype=np.int64) for call in calls]
        states: list[ArState] = [call.args[1] for call in calls]
        position, length = states[0].position, tokens[0].shape[1]
        cond = np.concatenate([s.cond[:, position:position + length] for s in states])
        outputs, cache = self.step_graph.run({names.tokens: np.concatenate(tokens), names.cond: cond},
                                             _stack([s.cache for s in states]))
        logits = outputs[names.logits]
        return [(logits[rows], ArState(s.cond, _rows(cache, rows), position + length))
                for rows, s in zip(row_slices(tokens), states)]

    def select(self, state: ArState, rows: np.ndarray) -> ArState:
        """Keep ``rows`` of every cache (device caches come back to the host for the gather)."""
        index = np.asarray(rows, dtype=np.int64)
        return ArState(state.cond[index], {k: host(v)[index] for k, v in state.cache.items()}, state.position)
