"""The shared ASR encoder: log-mel -> x4 subsampling -> Conformer blocks, offline and streaming.

Axes: B batch, M mel bands, F feature frames (10 ms), T encoder frames
(40 ms), D model dim.

Offline, ``forward(mel, lengths, chunk, left_chunks)`` runs every block with a
chunk-wise attention mask (``chunk = 0``: full context). Streaming,
``step(mel, state, chunk, left_chunks)`` consumes features as they come and
runs the blocks on exactly ``chunk`` encoder frames at a time with per-layer
KV and convolution caches, so its output equals ``forward`` with the same
chunk mask (up to float rounding). Features are normalised with a global mean
and standard deviation stored as buffers (set by training), never per
utterance, so streaming needs no look-ahead for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenspeech.models.conformer import (
    SUBSAMPLING,
    SUBSAMPLING_CONTEXT,
    ConformerBlock,
    ConvSubsampling,
    chunk_mask,
    subsampled_length,
    trim_cache,
)
from tokenspeech.models.transformer import (
    LayerCache,
    Rope,
    TransformerConfig,
    rotary_row_tables,
    stack_caches,
    unstack_cache,
)


@dataclass
class EncoderState:
    """Streaming state of :class:`AsrEncoder` for a batch of streams that advance together."""

    features: Tensor  # [B, M, r] normalised features not yet consumed by the subsampling
    pending: Tensor  # [B, t, D] subsampled frames waiting for a full chunk (t < chunk)
    caches: list[LayerCache]  # per layer, keys/values of the visible past frames
    conv_caches: list[Tensor]  # per layer, [B, D, K-1]
    frames: int = 0  # encoder frames emitted so far


class AsrEncoder(nn.Module):
    """Conv subsampling + Conformer stack: ``mel [B, M, F] -> [B, T, D]``."""

    def __init__(self, n_mels: int, config: TransformerConfig, conv_kernel: int, subsample_channels: int) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))
        self.subsampling = ConvSubsampling(n_mels, subsample_channels, config.dim)
        self.blocks = nn.ModuleList(ConformerBlock(config, conv_kernel) for _ in range(config.layers))

    def normalise(self, mel: Tensor) -> Tensor:
        """Global mean/variance normalisation of ``mel [B, M, F]``."""
        return (mel - self.feature_mean[:, None]) / self.feature_std[:, None]

    def forward(self, mel: Tensor, mel_lengths: Tensor, chunk: int = 0,
                left_chunks: int = 0) -> tuple[Tensor, Tensor]:
        """``mel [B, M, F]``, ``mel_lengths [B]`` -> encoder output ``[B, T, D]`` and lengths ``[B]``."""
        x = self.subsampling(self.normalise(mel))
        lengths = subsampled_length(mel_lengths)
        mask = chunk_mask(x.shape[1], chunk, left_chunks, lengths, device=x.device)
        for block in self.blocks:
            x, _, _ = block(x, mask)
        return x, lengths

    def init_state(self, batch: int) -> EncoderState:
        """State of ``batch`` streams at their start."""
        like = self.feature_mean
        heads, head_dim = self.config.heads, self.config.dim // self.config.heads
        empty = like.new_zeros(batch, heads, 0, head_dim)
        return EncoderState(
            features=like.new_zeros(batch, like.shape[0], 0),
            pending=like.new_zeros(batch, 0, self.config.dim),
            caches=[LayerCache(empty, empty) for _ in self.blocks],
            conv_caches=[block.conv.empty_cache(batch, like) for block in self.blocks],
        )

    def step(self, mel: Tensor, state: EncoderState, chunk: int, left_chunks: int = 0,
             final: bool = False) -> tuple[Tensor, EncoderState]:
        """Consume new features ``mel [B, M, F']``; returns the finished encoder frames ``[B, T', D]``.

        Frames leave in whole chunks of ``chunk`` frames; ``final=True``
        flushes the last, shorter chunk (call it once at the end of a stream).
        """
        if chunk < 1:
            raise ValueError("streaming needs chunk >= 1 encoder frames")
        state = self._subsample(mel, state)
        outputs = []
        while state.pending.shape[1] >= chunk or (final and state.pending.shape[1] > 0):
            block_input, state.pending = state.pending[:, :chunk], state.pending[:, chunk:]
            output, state = self._run_chunk(block_input, state, chunk * left_chunks)
            outputs.append(output)
        if not outputs:
            return state.pending[:, :0], state
        return torch.cat(outputs, dim=1), state

    def step_streams(self, mels: Sequence[Tensor], states: Sequence[EncoderState], chunk: int, left_chunks: int,
                     finals: Sequence[bool]) -> list[tuple[Tensor, EncoderState]]:
        """:meth:`step` for independent streams (batch 1 each) at their own positions, chunks batched.

        The n-th chunks of every stream that has one run as one pass over
        their caches padded to the longest (a key mask hides the padding,
        per-row rotary positions), so each stream's frames equal :meth:`step`
        on it alone to float rounding. Streams fed alike (the same piece
        sizes) batch fully; a stream's flushed short last chunk runs with the
        other chunks of its length.
        """
        if chunk < 1:
            raise ValueError("streaming needs chunk >= 1 encoder frames")
        if any(state.pending.shape[0] != 1 for state in states):
            raise ValueError("step_streams takes streams of batch 1")
        staged = [self._subsample(mel, state) for mel, state in zip(mels, states)]
        outputs: list[list[Tensor]] = [[] for _ in staged]
        while True:
            lengths = {}
            for index, (state, final) in enumerate(zip(staged, finals)):
                waiting = state.pending.shape[1]
                if waiting >= chunk or (final and waiting > 0):
                    lengths.setdefault(min(waiting, chunk), []).append(index)
            if not lengths:
                break
            for length, rows in lengths.items():
                inputs = []
                for index in rows:
                    inputs.append(staged[index].pending[:, :length])
                    staged[index].pending = staged[index].pending[:, length:]
                ran = self._run_chunk_rows(torch.cat(inputs), [staged[i] for i in rows], chunk * left_chunks)
                for index, (output, state) in zip(rows, ran):
                    outputs[index].append(output)
                    staged[index] = state
        return [(torch.cat(out, dim=1) if out else state.pending[:, :0], state) for out, state in zip(outputs, staged)]

    def _subsample(self, mel: Tensor, state: EncoderState) -> EncoderState:
        """Add ``mel``'s subsampled frames to the pending ones; keep the features the subsampling still needs."""
        features = torch.cat([state.features, self.normalise(mel)], dim=2)
        produced = subsampled_length(features.shape[2])
        pending = torch.cat([state.pending, self.subsampling(features)], dim=1)
        return EncoderState(features[:, :, produced * SUBSAMPLING:], pending, state.caches, state.conv_caches,
                            state.frames)

    def _run_chunk_rows(self, x: Tensor, states: Sequence[EncoderState],
                        keep: int) -> list[tuple[Tensor, EncoderState]]:
        """One chunk ``x [B, c, D]`` of each of ``B`` streams (states of batch 1) after its own cached past."""
        if len(states) == 1:
            return [self._run_chunk(x, states[0], keep)]
        caches, past = stack_caches([[trim_cache(cache, keep) for cache in state.caches] for state in states])
        padded, length = caches[0].length, x.shape[1]
        mask, rope = rows_mask_and_rope(past, caches[0].key, x, self.config.dim // self.config.heads)
        conv_caches = [torch.cat(layer) for layer in zip(*(state.conv_caches for state in states))]
        new_caches, new_conv = [], []
        for block, cache, conv_cache in zip(self.blocks, caches, conv_caches):
            x, cache, conv_cache = block(x, mask, cache, conv_cache, rope)
            new_caches.append(cache)
            new_conv.append(conv_cache)
        results = []
        for row, state in enumerate(states):
            rows = slice(row, row + 1)
            own = unstack_cache(new_caches, rows, int(past[row]), length, padded)
            results.append((x[rows], EncoderState(state.features, state.pending, own, [c[rows] for c in new_conv],
                                                  state.frames + length)))
        return results

    def _run_chunk(self, x: Tensor, state: EncoderState, keep: int) -> tuple[Tensor, EncoderState]:
        """Run the blocks on one chunk ``x [B, c, D]`` after the cached past."""
        caches, conv_caches = [], []
        for block, cache, conv_cache in zip(self.blocks, state.caches, state.conv_caches):
            x, cache, conv_cache = block(x, None, trim_cache(cache, keep), conv_cache)
            caches.append(cache)
            conv_caches.append(conv_cache)
        return x, EncoderState(state.features, state.pending, caches, conv_caches, state.frames + x.shape[1])


def rows_mask_and_rope(past: Tensor, keys: Tensor, x: Tensor, head_dim: int) -> tuple[Tensor, Rope]:
    """Key mask ``[B, 1, 1, P + c]`` and rotary tables of streams at their own positions.

    Row ``b`` of the cached keys ``keys [B, H, P, Dh]`` holds ``past[b]``
    valid positions (the rest padding) and all ``c`` new frames of
    ``x [B, c, D]`` are real; row ``b``'s new frames sit at positions
    ``past[b] ..``. Sizes are read from the tensors, so an exported graph
    keeps them dynamic.
    """
    padded = keys.shape[2]
    index = torch.arange(padded + x.shape[1], device=x.device)[None, :]
    mask = ((index < past[:, None]) | (index >= padded))[:, None, None, :]
    return mask, rotary_row_tables(x.shape[1], head_dim, past)


def features_needed(chunk: int) -> int:
    """Feature frames (10 ms) that must have arrived before the first chunk of ``chunk`` frames is out."""
    return SUBSAMPLING * (chunk - 1) + SUBSAMPLING_CONTEXT
