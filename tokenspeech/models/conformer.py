"""Conformer pieces for the streaming ASR encoder.

Axes: B batch, M mel bands, F feature frames (10 ms), T encoder frames
(40 ms), D model dim, K conv kernel.

Attention is :class:`tokenspeech.models.transformer.SelfAttention` (RoPE,
explicit :class:`LayerCache`); this module adds what a Conformer needs on top:
a causal depthwise-convolution module with its own cache, a macaron block,
x4 convolutional subsampling and chunk-wise attention masks. Every piece is
causal or chunk-causal so the same weights run offline (with a chunk mask)
and streaming (chunk by chunk with caches) and give the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenspeech.models.transformer import LayerCache, Rope, SelfAttention, TransformerConfig

SUBSAMPLING = 4  # feature frames per encoder frame
SUBSAMPLING_CONTEXT = 7  # feature frames seen by one encoder frame (two 3-tap, stride-2 convs)


def subsampled_length(frames: Tensor | int) -> Tensor | int:
    """Encoder frames produced from ``frames`` feature frames: ``(F - 7) // 4 + 1`` (0 if ``F < 7``)."""
    if isinstance(frames, Tensor):
        return torch.clamp((frames - SUBSAMPLING_CONTEXT) // SUBSAMPLING + 1, min=0)
    return max(0, (frames - SUBSAMPLING_CONTEXT) // SUBSAMPLING + 1)


class ConvSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions over (time, mel), no time padding: ``[B, M, F] -> [B, T, D]``.

    Encoder frame ``t`` depends on feature frames ``[4t, 4t + 6]`` only, so
    a stream that keeps the unconsumed tail of its features reproduces the
    offline output exactly.
    """

    def __init__(self, n_mels: int, channels: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        bands = ((n_mels - 3) // 2 + 1 - 3) // 2 + 1
        self.proj = nn.Linear(channels * bands, dim)

    def forward(self, mel: Tensor) -> Tensor:
        batch, _, frames = mel.shape
        if frames < SUBSAMPLING_CONTEXT:
            return mel.new_zeros(batch, 0, self.proj.out_features)
        x = self.conv(mel.transpose(1, 2).unsqueeze(1))  # [B, C, T, M']
        x = x.permute(0, 2, 1, 3).flatten(2)  # [B, T, C * M']
        return self.proj(x)


class CausalConvModule(nn.Module):
    """Conformer convolution: pointwise + GLU, causal depthwise conv, norm, SiLU, pointwise.

    The depthwise conv sees the current and ``K - 1`` past frames; its cache
    ``[B, D, K - 1]`` holds the last GLU outputs (zeros at the start, which
    equals the offline left padding).
    """

    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.depth_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def empty_cache(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch, self.depthwise.in_channels, self.kernel - 1)

    def forward(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x [B, T, D]``, ``cache [B, D, K-1]`` or None (zeros) -> ``[B, T, D]``, new cache."""
        y = nn.functional.glu(self.pointwise_in(self.norm(x)), dim=-1).transpose(1, 2)  # [B, D, T]
        if cache is None:
            cache = self.empty_cache(x.shape[0], y)
        y = torch.cat([cache, y], dim=2)
        new_cache = y[:, :, y.shape[2] - (self.kernel - 1):]
        y = self.depthwise(y).transpose(1, 2)  # [B, T, D]
        y = self.pointwise_out(nn.functional.silu(self.depth_norm(y)))
        return self.drop(y), new_cache


def _feed_forward(dim: int, mult: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(mult * dim, dim), nn.Dropout(dropout))


class ConformerBlock(nn.Module):
    """Macaron Conformer block: half FFN, self-attention, causal conv, half FFN, norm."""

    def __init__(self, config: TransformerConfig, conv_kernel: int) -> None:
        super().__init__()
        self.ff_in = _feed_forward(config.dim, config.ff_mult, config.dropout)
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = SelfAttention(config)
        self.attention_drop = nn.Dropout(config.dropout)
        self.conv = CausalConvModule(config.dim, conv_kernel, config.dropout)
        self.ff_out = _feed_forward(config.dim, config.ff_mult, config.dropout)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: Tensor, mask: Tensor | None, cache: LayerCache | None = None,
                conv_cache: Tensor | None = None, rope: Rope | None = None) -> tuple[Tensor, LayerCache, Tensor]:
        """``x [B, T, D]``; ``mask [B or 1, 1, T, P+T]`` -> output, attention cache, conv cache.

        ``rope``: rotary tables of the new positions when rows sit at different positions
        (:func:`rotary_row_tables`); by default they follow the cache length.
        """
        x = x + 0.5 * self.ff_in(x)
        attended, new_cache = self.attention(self.attention_norm(x), mask, cache, rope)
        x = x + self.attention_drop(attended)
        convolved, new_conv_cache = self.conv(x, conv_cache)
        x = x + convolved
        x = x + 0.5 * self.ff_out(x)
        return self.norm(x), new_cache, new_conv_cache


def chunk_mask(length: int, chunk: int, left_chunks: int = 0, lengths: Tensor | None = None,
               device: torch.device | None = None) -> Tensor | None:
    """Bool mask ``[B or 1, 1, T, T]`` (True = may attend) for chunk-wise attention.

    Frame ``i`` sees every frame of its own chunk ``i // chunk`` and of the
    ``left_chunks`` chunks before it (all earlier chunks when
    ``left_chunks <= 0``). ``chunk <= 0`` means full context. ``lengths [B]``
    hides padded keys. Returns None when nothing is hidden.
    """
    mask = None
    if chunk > 0 and chunk < length:
        index = torch.arange(length, device=device)
        query_chunk, key_chunk = (index // chunk)[:, None], (index // chunk)[None, :]
        mask = key_chunk <= query_chunk
        if left_chunks > 0:
            mask = mask & (key_chunk >= query_chunk - left_chunks)
        mask = mask[None, None]
    if lengths is not None:
        keys = (torch.arange(length, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]
        mask = keys if mask is None else mask & keys
    return mask


def shift_rotary(x: Tensor, delta: int) -> Tensor:
    """Move rotary-encoded keys ``[B, H, P, Dh]`` by ``delta`` positions (same formula as ``rotary``).

    A streaming encoder with limited left context drops old cached keys; the
    kept keys are shifted back so that ``SelfAttention`` (which numbers new
    positions from the cache length) sees the same relative distances as the
    offline pass.
    """
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, device=x.device, dtype=torch.float32) / half))
    angle = inv_freq * float(delta)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def trim_cache(cache: LayerCache, keep: int) -> LayerCache:
    """Keep the last ``keep`` positions of ``cache`` (re-numbered from 0); ``keep <= 0`` keeps all."""
    drop = cache.length - keep
    if keep <= 0 or drop <= 0:
        return cache
    return LayerCache(shift_rotary(cache.key[:, :, drop:], -drop), cache.value[:, :, drop:])
