"""ONNX Runtime adapters from an exported ASR model to the recognizer and the decoding protocols.

:class:`OnnxAsrBackend` is a :class:`tokenspeech.asr.engine.AsrBackend`, the
twin of :class:`tokenspeech.asr.torch_backend.TorchAsrBackend`, so
:class:`tokenspeech.asr.engine.AsrRecognizer` (batch and streaming) runs on
it unchanged. Features are :func:`tokenspeech.features.log_mel_numpy` (the
reference definition the PyTorch front-end is built from).

Streaming keeps the unconsumed mel tail and the subsampled frames waiting
for a whole chunk on the host, as :meth:`AsrEncoder.step` does, and runs
``asr_encoder_chunk`` once per chunk with the per-layer caches as explicit
inputs and outputs (kept on the device with I/O binding).

Axes: B batch, M mel bands, F feature frames, T encoder frames, N tokens, D dim, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenspeech.asr.engine import Encoded
from tokenspeech.decoding.calls import Call
from tokenspeech.errors import ConfigError
from tokenspeech.export.manifest import AsrNames, cache_names
from tokenspeech.features import MelConfig, log_mel_numpy
from tokenspeech.runtime.codec import zeros_for
from tokenspeech.runtime.manifest import ExportDirectory, GraphSet
from tokenspeech.runtime.sessions import RuntimeOptions, host
from tokenspeech.text.vocab import Vocabulary

Tensors = dict[str, Any]


def _past_length(cache: Any) -> int:
    """Positions held by a key cache ``[1, H, P, Dh]`` (a NumPy array or an ``OrtValue`` on a device)."""
    shape = cache.shape if isinstance(cache, np.ndarray) else cache.shape()
    return int(shape[2])


def _rename(outputs: Tensors, sources: list[str], targets: list[str]) -> Tensors:
    return {target: outputs[source] for source, target in zip(sources, targets)}


class OnnxAsrBackend:
    """The networks of an exported ASR model; see the module docstring."""

    def __init__(self, export: ExportDirectory, options: RuntimeOptions = RuntimeOptions()) -> None:
        entry = export.model("asr")
        self.entry = entry
        self.names: AsrNames = export.names("asr")
        self.graphs: GraphSet = export.graphs("asr", options)
        self.decoders = tuple(entry["decoders"])
        self.mel = MelConfig.from_json(entry["mel"])
        self.vocabulary = Vocabulary.from_json(entry["vocabulary"])
        self.subsampling = int(entry["subsampling"])
        self.subsampling_context = int(entry["subsampling_context"])
        self.dim = int(entry["dim"])

    def features(self, wav: np.ndarray) -> np.ndarray:
        return log_mel_numpy(np.asarray(wav, dtype=np.float32), self.mel)

    def _encoded(self, outputs: Tensors, lengths: np.ndarray) -> Encoded:
        names = self.names
        return Encoded(outputs[names.hidden], np.asarray(lengths, dtype=np.int64), outputs[names.ctc_log_probs],
                       outputs.get(names.alphas))

    def encode(self, mel: np.ndarray, mel_lengths: np.ndarray, chunk: int, left_chunks: int) -> Encoded:
        names = self.names
        outputs = self.graphs[names.encoder].run({
            names.mel: np.ascontiguousarray(mel, dtype=np.float32),
            names.mel_lengths: np.asarray(mel_lengths, dtype=np.int64),
            names.chunk: np.array(chunk, dtype=np.int64), names.left_chunks: np.array(left_chunks, dtype=np.int64)})
        return self._encoded(outputs, outputs[names.lengths])

    def paraformer(self, acoustic: np.ndarray, token_lengths: np.ndarray, hidden: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        names = self.names
        return self.graphs[names.paraformer].run({
            names.acoustic: np.ascontiguousarray(acoustic, dtype=np.float32),
            names.token_lengths: np.asarray(token_lengths, dtype=np.int64), names.hidden: hidden,
            names.lengths: np.asarray(lengths, dtype=np.int64)})[names.logits]

    def attention_step(self) -> OnnxAttentionStep:
        return OnnxAttentionStep(self)

    def block_decoder(self) -> OnnxBlockDecoder:
        return OnnxBlockDecoder(self)

    def init_stream(self) -> StreamState:
        names = self.names
        graph = self.graphs[names.encoder_chunk]
        caches = zeros_for(graph, cache_names(names.cache_in, self.entry["layers"]["encoder"],
                                              ("key", "value", "conv")), 1)
        return StreamState(np.zeros((1, self.mel.n_mels, 0), dtype=np.float32),
                           np.zeros((1, 0, self.dim), dtype=np.float32), caches)

    def encode_stream(self, mel: np.ndarray, state: StreamState, chunk: int, left_chunks: int,
                      final: bool) -> tuple[Encoded, StreamState]:
        """:meth:`AsrEncoder.step` on the exported graphs: whole chunks out, the rest kept (``final`` flushes)."""
        self._check_chunking(chunk, left_chunks)
        features, pending = self._subsample(mel, state)
        caches, outputs = state.caches, []
        while pending.shape[1] >= chunk or (final and pending.shape[1] > 0):
            block, pending = pending[:, :chunk], pending[:, chunk:]
            result, caches = self._run_chunk(np.ascontiguousarray(block), caches)
            outputs.append(result)
        return self._join(outputs), StreamState(features, pending, caches)

    def batch_key(self, call: Call) -> Hashable | None:
        """``encode_stream`` calls of concurrent streams with the same chunking run as one batched pass
        (host arrays only: with I/O binding the caches stay on the device, one stream at a time)."""
        graph = self.graphs[self.names.encoder_chunk]
        if call.method != self.encode_stream or graph.bind or self.names.past_lengths not in graph.inputs:
            return None  # an export older than past_lengths pads nothing safely: one stream at a time
        _, _, chunk, left_chunks, _ = call.args
        return self, "encode_stream", chunk, left_chunks

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[Encoded, StreamState]]:
        """Every stream's ``encode_stream``; the n-th chunks of all streams that have one run as one pass,
        their caches padded to the longest (``past_lengths`` tells the graph which positions are real)."""
        _, _, chunk, left_chunks, _ = calls[0].args
        self._check_chunking(chunk, left_chunks)
        staged = []
        for mel, state, _, _, final in (call.args for call in calls):
            features, pending = self._subsample(mel, state)
            staged.append([features, pending, state.caches, [], final])
        while True:
            lengths: dict[int, list[int]] = {}
            for index, (_, pending, _, _, final) in enumerate(staged):
                if pending.shape[1] >= chunk or (final and pending.shape[1] > 0):
                    lengths.setdefault(min(pending.shape[1], chunk), []).append(index)
            if not lengths:
                break
            for length, rows in lengths.items():
                blocks = []
                for index in rows:
                    blocks.append(staged[index][1][:, :length])
                    staged[index][1] = staged[index][1][:, length:]
                results = self._run_chunk_rows(np.concatenate(blocks), [staged[i][2] for i in rows])
                for index, (result, caches) in zip(rows, results):
                    staged[index][2] = caches
                    staged[index][3].append(result)
        return [(self._join(outputs), StreamState(features, pending, caches))
                for features, pending, caches, outputs, _ in staged]

    def _check_chunking(self, chunk: int, left_chunks: int) -> None:
        if chunk < 1:
            raise ValueError("streaming needs chunk >= 1 encoder frames")
        if left_chunks not in self.entry["streaming"]["left_chunks"]:
            raise ConfigError(f"the exported streaming encoder keeps all left context (left_chunks 0), "
                              f"not left_chunks {left_chunks}")

    def _subsample(self, mel: np.ndarray, state: StreamState) -> tuple[np.ndarray, np.ndarray]:
        """New subsampled frames joined to the pending ones; the mel tail the subsampling still needs."""
        names = self.names
        features = np.concatenate([state.features, np.asarray(mel, dtype=np.float32)], axis=2)
        produced = max(0, (features.shape[2] - self.subsampling_context) // self.subsampling + 1)
        pending = state.pending
        if produced:
            frames = self.graphs[names.subsample].run({names.mel: features})[names.frames]
            pending = np.concatenate([pending, frames], axis=1)
        return features[:, :, produced * self.subsampling:], pending

    def _cache_names(self) -> tuple[list[str], list[str]]:
        layers, kinds = self.entry["layers"]["encoder"], ("key", "value", "conv")
        return cache_names(self.names.cache_in, layers, kinds), cache_names(self.names.cache_out, layers, kinds)

    def _run_chunk(self, block: np.ndarray, caches: Tensors) -> tuple[Tensors, Tensors]:
        names = self.names
        cache_in, cache_out = self._cache_names()
        past = np.array([_past_length(caches[cache_in[0]])], dtype=np.int64)
        outputs = self.graphs[names.encoder_chunk].run({names.frames: block, names.past_lengths: past, **caches},
                                                       keep=cache_out)
        return outputs, _rename(outputs, cache_out, cache_in)

    def _run_chunk_rows(self, blocks: np.ndarray, streams: list[Tensors]) -> list[tuple[Tensors, Tensors]]:
        """One chunk ``[B, c, D]`` of each of B streams (host caches of batch 1 each) as one graph run."""
        if len(streams) == 1:
            return [self._run_chunk(blocks, streams[0])]
        names = self.names
        cache_in, cache_out = self._cache_names()
        past = np.array([caches[cache_in[0]].shape[2] for caches in streams], dtype=np.int64)
        padded, length = int(past.max()), blocks.shape[1]
        feeds: Tensors = {names.frames: np.ascontiguousarray(blocks), names.past_lengths: past}
        for name in cache_in:
            if name.endswith("conv"):
                feeds[name] = np.concatenate([caches[name] for caches in streams])
            else:
                feeds[name] = np.concatenate([np.pad(caches[name], ((0, 0), (0, 0), (0, padded - caches[name].shape[2]),
                                                                    (0, 0))) for caches in streams])
        outputs = self.graphs[names.encoder_chunk].run(feeds)
        results = []
        for row, own in enumerate(past.tolist()):
            mine = {name: value[row:row + 1] for name, value in outputs.items() if name not in cache_out}
            caches = {}
            for source, target in zip(cache_out, cache_in):
                value = outputs[source][row:row + 1]
                if not source.endswith("conv") and own < padded:  # drop the padding between past and new
                    value = np.concatenate([value[:, :, :own], value[:, :, padded:padded + length]], axis=2)
                caches[target] = np.ascontiguousarray(value)
            results.append((mine, caches))
        return results

    def _join(self, outputs: list[Tensors]) -> Encoded:
        names = self.names
        heads = [names.hidden, names.ctc_log_probs] + ([names.alphas] if outputs and names.alphas in outputs[0]
                                                       else [])
        if not outputs:
            alphas = np.zeros((1, 0), np.float32) if self.graphs.has(names.paraformer) else None
            return Encoded(np.zeros((1, 0, self.dim), np.float32), np.zeros(1, np.int64),
                           np.zeros((1, 0, len(self.vocabulary)), np.float32), alphas)
        joined = {name: np.concatenate([o[name] for o in outputs], axis=1) for name in heads}
        return self._encoded(joined, np.array([joined[names.hidden].shape[1]]))


@dataclass(frozen=True)
class StreamState:
    """One stream's encoder: mel frames not yet subsampled, frames waiting for a chunk, per-layer caches."""

    features: np.ndarray  # [1, M, r] (not normalised: the subsample graph normalises)
    pending: np.ndarray  # [1, t, D], t < chunk
    caches: Tensors  # cache_in.<layer>.key|value|conv -> array


@dataclass(frozen=True)
class AttentionState:
    """Decoder KV caches, cross-attention memory keys/values and the memory mask ``[B, 1, 1, T]``."""

    caches: Tensors
    memory: Tensors
    memory_mask: Any


class OnnxAttentionStep:
    """StepModel over ``asr_ar_step``; build the first state with :meth:`prepare`."""

    def __init__(self, backend: OnnxAsrBackend) -> None:
        names = backend.names
        layers = backend.entry["layers"]["ar"]
        self.names = names
        self.memory_graph = backend.graphs[names.ar_memory]
        self.step_graph = backend.graphs[names.ar_step]
        self.cache_in, self.cache_out = cache_names(names.cache_in, layers), cache_names(names.cache_out, layers)
        self.memory = cache_names(names.memory, layers)

    def prepare(self, hidden: np.ndarray, lengths: np.ndarray) -> AttentionState:
        """State for ``hidden [B, T, D]`` with valid ``lengths [B]`` and nothing decoded yet."""
        names = self.names
        outputs = self.memory_graph.run({names.hidden: np.ascontiguousarray(hidden, dtype=np.float32),
                                         names.lengths: np.asarray(lengths, dtype=np.int64)},
                                        keep=[names.memory_mask, *self.memory])
        return AttentionState(zeros_for(self.step_graph, self.cache_in, hidden.shape[0]),
                              {name: outputs[name] for name in self.memory}, outputs[names.memory_mask])

    def step(self, tokens: np.ndarray, state: AttentionState) -> tuple[np.ndarray, AttentionState]:
        names = self.names
        feeds = {names.tokens: np.ascontiguousarray(tokens, dtype=np.int64), names.memory_mask: state.memory_mask,
                 **state.caches, **state.memory}
        outputs = self.step_graph.run(feeds, keep=self.cache_out)
        caches = _rename(outputs, self.cache_out, self.cache_in)
        return outputs[names.logits], AttentionState(caches, state.memory, state.memory_mask)

    def select(self, state: AttentionState, rows: np.ndarray) -> AttentionState:
        index = np.asarray(rows, dtype=np.int64)
        return AttentionState({k: host(v)[index] for k, v in state.caches.items()},
                              {k: host(v)[index] for k, v in state.memory.items()}, host(state.memory_mask)[index])


@dataclass(frozen=True)
class BlockState:
    """One stream: decoder KV cache of the label context and cross-attention memory keys/values."""

    caches: Tensors
    memory: Tensors


class OnnxBlockDecoder:
    """BlockDecoderModel over ``asr_block_memory`` / ``asr_block_step`` / ``asr_block_context`` (batch 1)."""

    def __init__(self, backend: OnnxAsrBackend) -> None:
        names = backend.names
        layers = backend.entry["layers"]["parallel"]
        self.names = names
        self.graphs = backend.graphs
        self.cache_in, self.cache_out = cache_names(names.cache_in, layers), cache_names(names.cache_out, layers)
        self.memory = cache_names(names.memory, layers)

    def init_state(self) -> BlockState:
        step = self.graphs[self.names.block_step]
        return BlockState(zeros_for(step, self.cache_in, 1), zeros_for(step, self.memory, 1))

    def add_memory(self, frames: np.ndarray, state: BlockState) -> BlockState:
        names = self.names
        new = self.graphs[names.block_memory].run({names.frames: np.asarray(frames, dtype=np.float32)[None]})
        return BlockState(state.caches, {name: np.concatenate([host(state.memory[name]), new[name]], axis=2)
                                         for name in self.memory})

    def decode_block(self, acoustic: np.ndarray, state: BlockState) -> np.ndarray:
        names = self.names
        feeds = {names.acoustic: np.asarray(acoustic, dtype=np.float32)[None], **state.caches, **state.memory}
        return self.graphs[names.block_step].run(feeds)[names.logits][0]

    def add_context(self, tokens: np.ndarray, state: BlockState) -> BlockState:
        names = self.names
        feeds = {names.tokens: np.asarray(tokens, dtype=np.int64)[None], **state.caches, **state.memory}
        outputs = self.graphs[names.block_context].run(feeds, keep=self.cache_out)
        return BlockState(_rename(outputs, self.cache_out, self.cache_in), state.memory)
