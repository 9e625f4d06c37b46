"""PyTorch adapters from :class:`TtsModel` to the NumPy decoding protocols.

- :class:`TorchMaskedModel`: :class:`tokenspeech.decoding.masked.MaskedModel` (whole sentence, full attention)
- :class:`TorchBlockModel`: :class:`tokenspeech.decoding.semiar.BlockModel` (preallocated KV buffer of committed blocks)
- :class:`TorchArStep`: :class:`tokenspeech.decoding.base.StepModel` for :class:`ARDecoder` (first codebook; KV buffer)

State stays torch tensors (conditioning, caches); only tokens and logits
cross the boundary as NumPy arrays (``torch.from_numpy`` / ``.numpy()``, no
copies for contiguous arrays). ``MASK`` (-1) becomes the mask embedding ``V``.

Each adapter is also a :class:`tokenspeech.decoding.calls.BatchedModel`: the
passes of concurrent sessions (each with its own state) run as one pass over
a padded batch: whole sentences padded to the longest with a key-padding
mask; semi-AR block passes and AR steps through :meth:`Transformer.step_into`,
each stream attending over its own preallocated KV buffer.

Axes: B batch, N phonemes, F frames, S new frames, K codebooks, G codebooks per pass, V codebook size, D dim.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tokenspeech.decoding.calls import Call, row_slices
from tokenspeech.decoding.masked import MASK, Side, keep_state, run_sided, sides
from tokenspeech.errors import ConfigError
from tokenspeech.models.transformer import (
    BufferPass,
    KVBuffer,
    attention_mask,
    kv_buffer,
)
from tokenspeech.models.tts import CodebookHeads, TtsModel, predicted_durations
from tokenspeech.tts.backend import Conditioning


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def _codes(tokens: np.ndarray, mask_id: int) -> Tensor:
    codes = _tensor(tokens)
    return torch.where(codes == MASK, torch.full_like(codes, mask_id), codes)


def _padded_codes(tokens: Sequence[np.ndarray], frames: int, mask_id: int) -> Tensor:
    """``[b_i, K, F_i]`` token arrays -> ``[B, K, frames]`` codes, padded with the mask token."""
    padded = [np.pad(t, ((0, 0), (0, 0), (0, frames - t.shape[2])), constant_values=MASK) for t in tokens]
    return _codes(np.concatenate(padded), mask_id)


def _padded_frames(tensors: Sequence[Tensor], frames: int) -> Tensor:
    """``[b_i, F_i, D]`` -> ``[B, frames, D]``, padded with zeros."""
    return torch.cat([F.pad(t, (0, 0, 0, frames - t.shape[1])) for t in tensors])


def _row_heads(heads: CodebookHeads, hidden: Tensor, codebooks: Sequence[int]) -> Tensor:
    """``heads`` over a batch: ``[B, F, D]`` -> ``[B, G, F, V]``, computed as one ``[1, B * F, D]`` sequence.

    Same per-row math as ``heads(hidden)``, but one matrix product: the
    broadcast product over ``B`` rows copies the head weights for every row.
    """
    batch, frames, dim = hidden.shape
    logits = heads(hidden.reshape(1, batch * frames, dim), list(codebooks))  # [1, G, B * F, V]
    return logits[0].unflatten(1, (batch, frames)).transpose(0, 1)


class TorchTtsBackend:
    """The front half of synthesis (text -> conditioning) and factories for the three decoding adapters."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model.eval()
        self.config = model.config

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @torch.inference_mode()
    def condition(self, phonemes: np.ndarray, voice: int, rate: float = 1.0,
                  durations: np.ndarray | None = None) -> Conditioning:
        """``phonemes [N]`` ids -> :class:`Conditioning`; durations predicted (divided by ``rate``) unless given."""
        ids = _tensor(np.asarray(phonemes)[None])
        speaker = torch.tensor([voice], dtype=torch.long)
        h, log_durations = self.model.encode_text(ids, speaker)
        frames = predicted_durations(log_durations, rate) if durations is None else _tensor(np.asarray(durations)[None])
        cond, _ = self.model.condition(h, frames, speaker)
        return Conditioning(cond, frames[0].numpy().copy())

    def batch_key(self, call: Call) -> Hashable | None:
        """Sentences of one network whose durations are predicted at the same rate."""
        if call.method != self.condition or len(call.args) != 3:
            return None
        return self.model, "condition", float(call.args[2])

    @torch.inference_mode()
    def run_batch(self, calls: Sequence[Call]) -> list[Conditioning]:
        """The text encoder over the sentences padded to the longest (attention masked past each end).

        The duration predictor runs per sentence: its convolutions see the
        padding differently from a sentence's end (as in training), so a
        padded batch would change the durations. The conditioner works frame
        by frame and runs batched again.
        """
        phonemes = [np.asarray(call.args[0], dtype=np.int64) for call in calls]
        lengths = [len(p) for p in phonemes]
        longest = max(lengths)
        ids = _tensor(np.stack([np.pad(p, (0, longest - len(p))) for p in phonemes]))
        speaker = torch.tensor([call.args[1] for call in calls], dtype=torch.long)
        h = self.model.text_encoder(ids, self.model.speaker(speaker), torch.tensor(lengths))
        rate = calls[0].args[2]
        frames = [predicted_durations(self.model.duration(h[row:row + 1, :n]), rate) for row, n in enumerate(lengths)]
        cond, frame_lengths = self.model.condition(h, torch.cat([F.pad(f, (0, longest - f.shape[1])) for f in frames]),
                                                   speaker)
        return [Conditioning(cond[row:row + 1, :int(frame_lengths[row])], frames[row][0].numpy().copy())
                for row in range(len(calls))]

    def masked(self) -> TorchMaskedModel:
        return TorchMaskedModel(self.model)

    def blocks(self) -> TorchBlockModel:
        return TorchBlockModel(self.model)

    def ar(self) -> TorchArStep:
        if self.model.ar is None:
            raise ConfigError("this TTS model has no AR codec LM (ar_layers = 0); use decoder nar or semiar")
        return TorchArStep(self.model)


@dataclass(frozen=True)
class MaskedState:
    """Conditioning ``[B, F, D]`` (and its unconditional twin) for whole-sequence passes."""

    cond: Tensor
    uncond: Tensor
    mask: Tensor | None = None  # [B, 1, 1, F] key padding, None when every row is full length


class TorchMaskedModel:
    """MaskedModel over :class:`MaskedCodecTransformer` with full (bidirectional) attention."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model

    def prepare(self, cond: Tensor, lengths: Tensor | None = None) -> MaskedState:
        mask = None if lengths is None else attention_mask(lengths, cond.shape[1], causal=False)
        return MaskedState(cond, self.model.conditioner.unconditional(cond), mask)

    @torch.inference_mode()
    def logits(self, tokens: np.ndarray, codebooks: Sequence[int], state: MaskedState,
               unconditional: Side = False) -> tuple[np.ndarray, MaskedState]:
        codes = _codes(tokens, self.model.config.mask_id)
        if sides(unconditional) == (False, True):  # both sides as one pass of twice the rows
            mask = None if state.mask is None else torch.cat([state.mask, state.mask])
            hidden = self.model.codec(torch.cat([codes, codes]), torch.cat([state.cond, state.uncond]), mask)
            logits = self.model.codec.heads(hidden, list(codebooks)).float().numpy()
            return logits.reshape(2, -1, *logits.shape[1:]), state
        hidden = self.model.codec(codes, state.uncond if unconditional else state.cond, state.mask)
        logits = self.model.codec.heads(hidden, list(codebooks))
        return logits.float().numpy(), state

    def batch_key(self, call: Call) -> Hashable | None:
        """Full-attention passes of one network asking for the same codebooks (padding masks: not batched)."""
        if call.method != self.logits or call.args[2].mask is not None:
            return None
        return self.model, "masked", tuple(call.args[1])

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, MaskedState]]:
        """The sentences of all calls (both sides of a guided one) padded to the longest, keys past each one's
        end masked."""
        return run_sided(calls, 3, self._run_one_sided, keep_state)

    @torch.inference_mode()
    def _run_one_sided(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, MaskedState]]:
        tokens = [call.args[0] for call in calls]
        states: list[MaskedState] = [call.args[2] for call in calls]
        frames = max(t.shape[2] for t in tokens)
        codes = _padded_codes(tokens, frames, self.model.config.mask_id)
        cond = _padded_frames([call.args[2].uncond if call.args[3] else call.args[2].cond for call in calls], frames)
        lengths = torch.tensor([t.shape[2] for t in tokens for _ in range(t.shape[0])])
        mask = None if bool((lengths == frames).all()) else attention_mask(lengths, frames, causal=False)
        hidden = self.model.codec(codes, cond, mask)
        logits = _row_heads(self.model.codec.heads, hidden, calls[0].args[1]).float().numpy()
        return [(logits[rows, :, :t.shape[2]], state)
                for rows, t, state in zip(row_slices(tokens), tokens, states)]


@dataclass(frozen=True)
class StreamCache:
    """Committed context of one stream in a preallocated buffer: its first ``length`` positions."""

    buffer: KVBuffer
    length: int = 0


@dataclass(frozen=True)
class _Pending:
    """What the last block pass wrote after the committed positions, which :meth:`TorchBlockModel.commit` may keep."""

    start: int
    tokens: np.ndarray  # [B, K, S] the pass' input


@dataclass(frozen=True)
class BlockState:
    """Committed context of one stream: KV caches (conditional and, with guidance, unconditional).

    The caches are buffers written in place (:class:`KVBuffer`): a state is
    used once, by the next pass or commit of its stream, never forked.
    """

    cond: Tensor  # [B, F, D]
    uncond: Tensor | None
    cache: StreamCache
    uncond_cache: StreamCache | None
    pending: _Pending | None = None
    pending_uncond: _Pending | None = None


def _both_pending(conditional: BlockState, unconditional: BlockState) -> BlockState:
    """The state after a guided pass: what each side's pass wrote, for :meth:`TorchBlockModel.commit`."""
    return replace(conditional, pending_uncond=unconditional.pending_uncond)


class TorchBlockModel:
    """BlockModel over :class:`MaskedCodecTransformer`, cached with ``Transformer.step_into`` (non-causal).

    Committed blocks enter the context showing only their first
    ``config.context_codebooks`` codebooks (the rest masked), as in training.
    Every pass writes its keys and values after the committed positions of
    the stream's buffer; when the last pass of a block had exactly the
    committed view as input, committing keeps them and costs no extra pass.
    """

    def __init__(self, model: TtsModel) -> None:
        self.model = model
        self.config = model.config

    def prepare(self, cond: Tensor, guidance: bool = False) -> BlockState:
        """A stream over the frames of ``cond [B, F, D]``: its buffers hold ``F`` positions."""
        transformer = self.model.codec.transformer.config
        batch, frames = cond.shape[0], cond.shape[1]

        def cache() -> StreamCache:
            return StreamCache(kv_buffer(transformer, batch, frames, cond.device))

        uncond = self.model.conditioner.unconditional(cond) if guidance else None
        return BlockState(cond, uncond, cache(), cache() if guidance else None)

    def _inputs(self, tokens: np.ndarray, start: int, cond: Tensor) -> Tensor:
        codes = _codes(tokens, self.config.mask_id)
        return self.model.codec.inputs(codes, cond[:, start:start + codes.shape[2]])

    def _sides(self, state: BlockState, unconditional: bool) -> tuple[Tensor, StreamCache]:
        if not unconditional:
            return state.cond, state.cache
        if state.uncond is None or state.uncond_cache is None:
            raise RuntimeError("prepare the block state with guidance=True to use guidance")
        return state.uncond, state.uncond_cache

    @staticmethod
    def _written(state: BlockState, pending: _Pending, unconditional: bool) -> BlockState:
        return replace(state, pending_uncond=pending) if unconditional else replace(state, pending=pending)

    def block_logits(self, tokens: np.ndarray, start: int, codebooks: Sequence[int], state: BlockState,
                     unconditional: Side = False) -> tuple[np.ndarray, BlockState]:
        return self.run_batch([Call(self.block_logits, (tokens, start, codebooks, state, unconditional))])[0]

    def batch_key(self, call: Call) -> Hashable | None:
        """Block passes of one network, whatever their positions, lengths and codebooks.

        The codebooks asked for only change the output heads, which run per
        set of codebooks after the shared transformer pass; so a session at a
        first-codebook pass and one at its fine pass share the pass (measured
        in docs/serving.md: fuller passes when sessions are out of phase).
        """
        if call.method != self.block_logits:
            return None
        return self.model, "block"

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, BlockState]]:
        """Every session's block over its own buffer (both buffers for a guided pass), as one
        :meth:`Transformer.step_into` pass."""
        return run_sided(calls, 4, self._run_one_sided, _both_pending)

    @torch.inference_mode()
    def _run_one_sided(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, BlockState]]:
        tokens = [call.args[0] for call in calls]
        frames = max(t.shape[2] for t in tokens)
        conds, streams = [], []
        for tokens_, start, _, state, unconditional in (call.args for call in calls):
            cond, cache = self._sides(state, unconditional)
            conds.append(cond[:, start:start + tokens_.shape[2]])
            streams.append(BufferPass(cache.buffer, cache.length, tokens_.shape[2]))
        x = self.model.codec.inputs(_padded_codes(tokens, frames, self.config.mask_id), _padded_frames(conds, frames))
        hidden = self.model.codec.transformer.step_into(x, streams)
        slices = row_slices(tokens)
        logits = self._logits_by_codebooks(hidden, slices, [tuple(call.args[2]) for call in calls])
        results = []
        for call, scores in zip(calls, logits):
            tokens_, start, _, state, unconditional = call.args
            pending = _Pending(start, np.array(tokens_, dtype=np.int64))
            results.append((scores[:, :, :tokens_.shape[2]], self._written(state, pending, unconditional)))
        return results

    def _logits_by_codebooks(self, hidden: Tensor, slices: Sequence[slice],
                             codebooks: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """Each call's logits ``[b_i, G_i, frames, V]``: the heads run once per distinct set of codebooks."""
        logits: list[np.ndarray | None] = [None] * len(slices)
        for wanted in dict.fromkeys(codebooks):
            members = [i for i, c in enumerate(codebooks) if c == wanted]
            parts = [hidden[slices[i]] for i in members]
            scores = _row_heads(self.model.codec.heads, torch.cat(parts), wanted).float().numpy()
            for i, rows in zip(members, row_slices(parts)):
                logits[i] = scores[rows]
        return logits

    @torch.inference_mode()
    def commit(self, tokens: np.ndarray, start: int, state: BlockState) -> BlockState:
        view = np.array(tokens, dtype=np.int64)
        view[:, self.config.context_codebooks:] = MASK
        cache = self._extend(view, start, state.cond, state.cache, state.pending)
        uncond_cache = None if state.uncond is None or state.uncond_cache is None else \
            self._extend(view, start, state.uncond, state.uncond_cache, state.pending_uncond)
        return BlockState(state.cond, state.uncond, cache, uncond_cache)

    def _extend(self, view: np.ndarray, start: int, cond: Tensor, cache: StreamCache,
                pending: _Pending | None) -> StreamCache:
        """The cache with ``view`` committed: the last pass's keys kept when it had this input, else a new pass."""
        length = view.shape[2]
        if pending is None or pending.start != start or not np.array_equal(pending.tokens, view):
            self.model.codec.transformer.step_into(self._inputs(view, start, cond),
                                                   [BufferPass(cache.buffer, cache.length, length)])
        return StreamCache(cache.buffer, cache.length + length)


@dataclass(frozen=True)
class ArState:
    """AR LM context: conditioning ``[B, F, D]``, the keys and values of the first ``position`` frames, next frame index.

    The buffer holds all ``F`` frames and steps write into it in place: a
    state is used once, by its next step; :meth:`TorchArStep.select` copies
    the rows a beam keeps into a buffer of their own.
    """

    cond: Tensor
    buffer: KVBuffer
    position: int


class TorchArStep:
    """StepModel over :class:`ArCodecLM`: tokens are the previous first-codebook codes (``V`` = BOS)."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model
        self.ar = model.ar

    @property
    def bos_id(self) -> int:
        return self.model.config.mask_id

    def prepare(self, cond: Tensor) -> ArState:
        """A sentence of ``F = cond.shape[1]`` frames: its buffer holds the ``F`` positions its steps can take."""
        return ArState(cond, kv_buffer(self.ar.transformer.config, cond.shape[0], cond.shape[1], cond.device), 0)

    def step(self, tokens: np.ndarray, state: ArState) -> tuple[np.ndarray, ArState]:
        (result,) = self.run_batch([Call(self.step, (tokens, state))])
        return result

    def batch_key(self, call: Call) -> Hashable | None:
        """Steps of one LM with the same number of new tokens, whatever their positions."""
        if call.method != self.step:
            return None
        return self.model, "ar", call.args[0].shape[1]

    @torch.inference_mode()
    def run_batch(self, calls: Sequence[Call]) -> list[tuple[np.ndarray, ArState]]:
        """Every session's step written into its own buffer, as one :meth:`Transformer.step_into` pass."""
        states: list[ArState] = [call.args[1] for call in calls]
        ids = _tensor(np.concatenate([call.args[0] for call in calls]))
        length = ids.shape[1]
        for s in states:
            if s.position + length > s.cond.shape[1]:
                raise ValueError(f"a step of {length} frames after {s.position} goes past the sentence's "
                                 f"{s.cond.shape[1]} frames")
        cond = torch.cat([s.cond[:, s.position:s.position + length] for s in states])
        hidden = self.ar.transformer.step_into(cond + self.ar.embed(ids),
                                               [BufferPass(s.buffer, s.position, length) for s in states])
        logits = self.ar.head(hidden).float().numpy()
        return [(logits[rows], ArState(s.cond, s.buffer, s.position + length))
                for rows, s in zip(row_slices([call.args[0] for call in calls]), states)]

    def select(self, state: ArState, rows: np.ndarray) -> ArState:
        """The beam rows ``rows`` of ``state``, in a buffer of their own (indexing copies)."""
        index = _tensor(rows)
        return ArState(state.cond[index], KVBuffer(state.buffer.key[:, index], state.buffer.value[:, index]),
                       state.position)
