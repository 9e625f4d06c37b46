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
from tokenspeech.models.transformer import LayerCache, TransformerConfig


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
        features = torch.cat([state.features, self.normalise(mel)], dim=2)
        produced = subsampled_length(features.shape[2])
        subsampled = self.subsampling(features)
        pending = torch.cat([state.pending, subsampled], dim=1)
        state = EncoderState(features[:, :, produced * SUBSAMPLING:], pending, state.caches,
                             state.conv_caches, state.frames)
        outputs = []
        while state.pending.shape[1] >= chunk or (final and state.pending.shape[1] > 0):
            block_input, state.pending = state.pending[:, :chunk], state.pending[:, chunk:]
            output, state = self._run_chunk(block_input, state, chunk * left_chunks)
            outputs.append(output)
        if not outputs:
            return state.pending[:, :0], state
        return torch.cat(outputs, dim=1), state

    def _run_chunk(self, x: Tensor, state: EncoderState, keep: int) -> tuple[Tensor, EncoderState]:
        """Run the blocks on one chunk ``x [B, c, D]`` after the cached past."""
        caches, conv_caches = [], []
        for block, cache, conv_cache in zip(self.blocks, state.caches, state.conv_caches):
            x, cache, conv_cache = block(x, None, trim_cache(cache, keep), conv_cache)
            caches.append(cache)
            conv_caches.append(conv_cache)
        return x, EncoderState(state.features, state.pending, caches, conv_caches, state.frames + x.shape[1])


def features_needed(chunk: int) -> int:
    """Feature frames (10 ms) that must have arrived before the first chunk of ``chunk`` frames is out."""
    return SUBSAMPLING * (chunk - 1) + SUBSAMPLING_CONTEXT
