"""Transformer layers shared by every token model, with an explicit KV cache.

Axes: B batch, S sequence (new positions), P past positions, D model dim,
H heads, Dh head dim.

The cache is a plain pair of tensors per layer, ``[B, H, P, Dh]``, passed in
and returned (the "past / present" pattern): that is exactly what an ONNX
step graph takes as inputs and outputs, so export needs no wrapper logic.
Positions are rotary (RoPE), offset by the cache length, so a step at
position ``P`` sees the same rotation as position ``P`` of a full pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TransformerConfig:
    """Dimensions of a transformer stack."""

    dim: int = 256
    heads: int = 4
    layers: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    cross_attention: bool = False
    causal: bool = True
    final_norm: bool = True  # False: the stack ends with the last block's residual sum (its user normalises)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if (self.dim // self.heads) % 2:
            raise ValueError("the head dimension must be even for rotary positions")


@dataclass
class LayerCache:
    """Self-attention keys and values of the past positions of one layer, ``[B, H, P, Dh]``."""

    key: Tensor
    value: Tensor

    @property
    def length(self) -> int:
        return self.key.shape[2]


def empty_cache(config: TransformerConfig, batch: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> list[LayerCache]:
    """A cache with no past positions for every layer."""
    shape = (batch, config.heads, 0, config.dim // config.heads)
    return [LayerCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
            for _ in range(config.layers)]


def stack_caches(caches: Sequence[list[LayerCache]]) -> tuple[list[LayerCache], Tensor]:
    """Caches of independent streams (``[b_i, H, P_i, Dh]`` each) as one batch padded to the longest.

    Returns ``(cache [B, H, P, Dh], past [B])`` with ``past`` each row's valid
    length (the rest is zeros): the input of :meth:`Transformer.step_rows`.
    """
    lengths = [c[0].length for c in caches]
    padded = max(lengths)
    past = torch.tensor([n for c, n in zip(caches, lengths) for _ in range(c[0].key.shape[0])],
                        dtype=torch.long, device=caches[0][0].key.device)

    def pad(tensor: Tensor, length: int) -> Tensor:
        return tensor if length == padded else F.pad(tensor, (0, 0, 0, padded - length))

    stacked = [LayerCache(torch.cat([pad(c[layer].key, n) for c, n in zip(caches, lengths)]),
                          torch.cat([pad(c[layer].value, n) for c, n in zip(caches, lengths)]))
               for layer in range(len(caches[0]))]
    return stacked, past


def unstack_cache(cache: list[LayerCache], rows: slice, past: int, length: int, padded: int) -> list[LayerCache]:
    """One stream's cache out of a :meth:`Transformer.step_rows` result, without padding.

    ``rows`` are its batch rows, ``past`` its valid past length, ``length``
    its real new positions, ``padded`` the padded past length of the batch:
    ``[b, H, past + length, Dh]``.
    """
    def own(tensor: Tensor) -> Tensor:
        if past == padded:
            return tensor[rows, :, :padded + length]
        return torch.cat([tensor[rows, :, :past], tensor[rows, :, padded:padded + length]], dim=2)

    return [LayerCache(own(layer.key), own(layer.value)) for layer in cache]


@dataclass(frozen=True)
class KVBuffer:
    """Keys and values of one stream's past for every layer, preallocated: ``[L, B, H, C, Dh]`` each.

    :meth:`Transformer.step_into` writes a pass's new positions into the
    buffer in place and attends over a view of it, so a cached pass copies
    only its new keys and values. With :class:`LayerCache` every pass copies
    the whole past (``torch.cat``), and a batched pass of concurrent streams
    copies it twice more (:func:`stack_caches`, :func:`unstack_cache`): a
    third of a batched semi-AR block pass of 16 streams (docs/serving.md,
    session 16). The price is that the buffer is linear state: a pass may
    rewrite positions after the committed ones only, so one buffer serves one
    line of passes, never two branches of it.
    """

    key: Tensor
    value: Tensor

    @property
    def capacity(self) -> int:
        return self.key.shape[3]

    @property
    def rows(self) -> int:
        return self.key.shape[1]


def kv_buffer(config: TransformerConfig, batch: int, capacity: int, device: torch.device | None = None,
              dtype: torch.dtype = torch.float32) -> KVBuffer:
    """An empty buffer for ``capacity`` positions of ``batch`` rows."""
    shape = (config.layers, batch, config.heads, capacity, config.dim // config.heads)
    return KVBuffer(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


@dataclass(frozen=True)
class BufferPass:
    """One stream's part of a :meth:`Transformer.step_into` pass.

    Its rows of the batch attend to ``past`` committed positions of
    ``buffer`` and to the first ``length`` new positions (the rest of the
    batch's ``S`` are padding), which are written at ``past .. past + length - 1``.
    """

    buffer: KVBuffer
    past: int
    length: int


Rope = tuple[Tensor, Tensor]  # cos, sin ``[S, Dh / 2]`` of positions ``offset .. offset + S - 1``


def rotary_tables(length: int, head_dim: int, offset: int | Tensor, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> Rope:
    """cos and sin ``[S, Dh / 2]`` of the rotation angles of positions ``offset + s``.

    Computed once per pass and shared by the queries and keys of every layer
    (they all use the same positions), instead of once per tensor and layer.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    positions = torch.arange(length, device=device, dtype=torch.float32) + offset
    angles = positions[:, None] * inv_freq[None, :]  # [S, half]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotary_row_tables(length: int, head_dim: int, offsets: Tensor, dtype: torch.dtype = torch.float32) -> Rope:
    """:func:`rotary_tables` for rows at different positions: cos and sin ``[B, 1, S, Dh / 2]`` of ``offsets[b] + s``.

    The same arithmetic, so row ``b`` equals ``rotary_tables(length, head_dim, offsets[b])`` exactly.
    """
    half = head_dim // 2
    device = offsets.device
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    positions = torch.arange(length, device=device, dtype=torch.float32)[None, :] + offsets[:, None]
    angles = positions[..., None] * inv_freq  # [B, S, half]
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate pairs of channels of ``x [B, H, S, Dh]`` by the angles of ``rope``."""
    cos, sin = rope
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rotary(x: Tensor, offset: int | Tensor) -> Tensor:
    """Rotate pairs of channels of ``x [B, H, S, Dh]`` by position ``offset + s``."""
    _, _, length, head_dim = x.shape
    return apply_rotary(x, rotary_tables(length, head_dim, offset, x.device, x.dtype))


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def _rotated_qkv(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, S, D]`` -> queries and keys rotated by ``rope``, and values: ``[B, H, S, Dh]`` each."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        rope = (rope[0].to(q.dtype), rope[1].to(q.dtype))  # float32 tables, rounded like q (autocast)
        return apply_rotary(q, rope), apply_rotary(k, rope), v

    def forward(self, x: Tensor, mask: Tensor | None, cache: LayerCache | None,
                rope: Rope | None = None) -> tuple[Tensor, LayerCache]:
        """``x [B, S, D]``; ``mask [B or 1, 1, S, P+S]`` bool (True = may attend) or None.

        ``rope``: the rotary tables of these positions (:func:`rotary_tables`), made here when not given.
        """
        batch, length, dim = x.shape
        if rope is None:
            offset = 0 if cache is None else cache.key.shape[2]
            rope = rotary_tables(length, dim // self.heads, offset, x.device)
        q, k, v = self._rotated_qkv(x, rope)
        if cache is not None:
            k = torch.cat([cache.key, k], dim=2)
            v = torch.cat([cache.value, v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(batch, length, dim)
        return self.out(y), LayerCache(k, v)

    def forward_into(self, x: Tensor, layer: int, streams: Sequence[BufferPass], masks: Sequence[Tensor | None],
                     rope: Rope) -> Tensor:
        """``x [B, S, D]`` of the streams stacked in order: write each one's new keys and values into
        layer ``layer`` of its buffer, then attend over its past and its real new positions (padding rows get 0)."""
        batch, length, dim = x.shape
        q, k, v = self._rotated_qkv(x, rope)
        y = q.new_zeros(q.shape)
        start = 0
        for stream, mask in zip(streams, masks):
            rows, new, end = slice(start, start + stream.buffer.rows), stream.length, stream.past + stream.length
            start = rows.stop
            keys, values = stream.buffer.key[layer], stream.buffer.value[layer]
            keys[:, :, stream.past:end] = k[rows, :, :new]
            values[:, :, stream.past:end] = v[rows, :, :new]
            y[rows, :, :new] = F.scaled_dot_product_attention(q[rows, :, :new], keys[:, :, :end], values[:, :, :end],
                                                              attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class CrossAttention(nn.Module):
    """Attention from the sequence to a memory (e.g. encoder output), no positions."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.q = nn.Linear(config.dim, config.dim)
        self.kv = nn.Linear(config.dim, 2 * config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        self.dropout = config.dropout

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """``memory [B, M, D]`` -> keys and values ``[B, H, M, Dh]``; computed once per utterance."""
        batch, length, dim = memory.shape
        k, v = self.kv(memory).view(batch, length, 2, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor | None) -> Tensor:
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, memory_kv[0], memory_kv[1], attn_mask=memory_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, feed-forward."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attention = SelfAttention(config)
        self.cross = CrossAttention(config) if config.cross_attention else None
        self.norm_cross = nn.LayerNorm(config.dim) if config.cross_attention else None
        self.norm2 = nn.LayerNorm(config.dim)
        self.ff = nn.Sequential(nn.Linear(config.dim, config.ff_mult * config.dim), nn.GELU(),
                                nn.Dropout(config.dropout), nn.Linear(config.ff_mult * config.dim, config.dim))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None, cache: LayerCache | None = None,
                memory_kv: tuple[Tensor, Tensor] | None = None,
                memory_mask: Tensor | None = None, rope: Rope | None = None) -> tuple[Tensor, LayerCache]:
        attended, new_cache = self.attention(self.norm1(x), mask, cache, rope)
        x = x + self.drop(attended)
        if self.cross is not None and memory_kv is not None:
            x = x + self.drop(self.cross(self.norm_cross(x), memory_kv, memory_mask))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, new_cache

    def forward_into(self, x: Tensor, layer: int, streams: Sequence[BufferPass], masks: Sequence[Tensor | None],
                     rope: Rope) -> Tensor:
        """:meth:`forward` with :meth:`SelfAttention.forward_into` (no cross-attention)."""
        x = x + self.drop(self.attention.forward_into(self.norm1(x), layer, streams, masks, rope))
        return x + self.drop(self.ff(self.norm2(x)))


def attention_mask(lengths: Tensor | None, length: int, causal: bool, past: int = 0) -> Tensor | None:
    """Bool mask ``[B or 1, 1, S, P+S]``: True where a query may attend.

    ``lengths [B]`` marks padding (keys at or past a sequence's length are
    hidden); ``causal`` hides future keys. Returns None when nothing is hidden.
    """
    total = past + length
    mask = None
    if causal:
        query = torch.arange(length, device=lengths.device if lengths is not None else None)[:, None] + past
        mask = (torch.arange(total, device=query.device)[None, :] <= query)[None, None]
    if lengths is not None:
        keys = torch.arange(total, device=lengths.device)[None, :] < (lengths[:, None] + past)
        keys = keys[:, None, None, :]
        mask = keys if mask is None else mask & keys
    return mask


class Transformer(nn.Module):
    """A stack of blocks and a final norm. ``forward`` for training, ``step`` for cached inference."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim) if config.final_norm else nn.Identity()

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Cross-attention keys/values of ``memory [B, M, D]`` for every layer."""
        if not self.config.cross_attention:
            raise RuntimeError("this transformer has no cross-attention")
        return [block.cross.memory_kv(memory) for block in self.blocks]

    def forward(self, x: Tensor, lengths: Tensor | None = None, memory: Tensor | None = None,
                memory_lengths: Tensor | None = None) -> Tensor:
        """``x [B, S, D]`` -> ``[B, S, D]`` over whole sequences (training, offline inference)."""
        mask = attention_mask(lengths, x.shape[1], self.config.causal)
        memory_kv = self.memory_kv(memory) if memory is not None else [None] * len(self.blocks)
        memory_mask = None if memory_lengths is None or memory is None else \
            attention_mask(memory_lengths, memory.shape[1], causal=False)[:, :, :1, :]
        rope = self._rope(x, 0)
        for block, kv in zip(self.blocks, memory_kv):
            x, _ = block(x, mask, None, kv, memory_mask, rope)
        return self.norm(x)

    def _rope(self, x: Tensor, offset: int | Tensor) -> Rope:
        """Rotary tables of the positions of ``x [B, S, D]`` after ``offset`` cached ones, for every layer."""
        config = self.config
        return rotary_tables(x.shape[1], config.dim // config.heads, offset, x.device)

    def step(self, x: Tensor, cache: list[LayerCache], memory_kv: list[tuple[Tensor, Tensor]] | None = None,
             memory_mask: Tensor | None = None) -> tuple[Tensor, list[LayerCache]]:
        """Process new positions ``x [B, S, D]`` after the cached ones; returns output and new cache.

        With ``causal`` the new positions attend to the past and causally to
        each other; otherwise (a bidirectional stack used blockwise) they see
        the whole past and all of the new block.
        """
        past = cache[0].length
        mask = attention_mask(None, x.shape[1], self.config.causal, past) if x.shape[1] > 1 else None
        rope = self._rope(x, past)
        new_cache = []
        for i, block in enumerate(self.blocks):
            kv = memory_kv[i] if memory_kv is not None else None
            x, layer_cache = block(x, mask, cache[i], kv, memory_mask, rope)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def step_rows(self, x: Tensor, cache: list[LayerCache], past: Tensor,
                  lengths: Tensor) -> tuple[Tensor, list[LayerCache]]:
        """:meth:`step` over a padded batch of independent streams, each at its own position.

        Row ``b`` of ``cache [B, H, P, Dh]`` holds ``past[b]`` valid positions
        (:func:`stack_caches`) and the first ``lengths[b]`` of the ``S`` new
        positions of ``x [B, S, D]`` are real. Each row's queries sit at
        positions ``past[b] + s`` and see only its valid keys (causally among
        the new ones when ``causal``), so its real outputs equal :meth:`step`
        on that row alone, to float rounding. The new cache is
        ``[B, H, P + S, Dh]``; :func:`unstack_cache` takes a stream's rows out.
        Used to batch the cached steps of concurrent sessions; no cross-attention.
        """
        padded, length = cache[0].length, x.shape[1]
        new = torch.arange(padded + length, device=x.device) - padded  # key index among the new positions
        keys = (new[None, :] < past[:, None] - padded) | ((new[None, :] >= 0) & (new[None, :] < lengths[:, None]))
        mask = keys[:, None, None, :]  # [B, 1, 1, P + S]
        if self.config.causal:
            query = torch.arange(length, device=x.device)[:, None]
            mask = mask & (new[None, :] <= query)[None, None]  # [B, 1, S, P + S]
        rope = rotary_row_tables(length, self.config.dim // self.config.heads, past)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, mask, layer_cache, None, None, rope)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def step_into(self, x: Tensor, streams: Sequence[BufferPass]) -> Tensor:
        """:meth:`step_rows` over preallocated buffers (:class:`KVBuffer`): new positions ``x [B, S, D]`` of the
        ``streams`` stacked in order -> ``[B, S, D]``; each stream's new keys and values are written into its buffer.

        Row by row the same arithmetic as :meth:`step` on that stream alone
        (equal to float rounding), without copying any past. Padding
        positions (past a stream's ``length``) give unspecified outputs.
        """
        if sum(stream.buffer.rows for stream in streams) != x.shape[0]:
            raise ValueError(f"the streams hold {sum(s.buffer.rows for s in streams)} rows, the input {x.shape[0]}")
        for stream in streams:
            if not 0 <= stream.length <= x.shape[1] or stream.past + stream.length > stream.buffer.capacity:
                raise ValueError(f"a pass of {stream.length} positions after {stream.past} does not fit a buffer "
                                 f"of {stream.buffer.capacity} (input: {x.shape[1]} positions)")
        masks = [attention_mask(None, s.length, True, s.past) if self.config.causal and s.length > 1 else None
                 for s in streams]
        past = torch.tensor([s.past for s in streams for _ in range(s.buffer.rows)], device=x.device)
        rope = rotary_row_tables(x.shape[1], self.config.dim // self.config.heads, past)
        for layer, block in enumerate(self.blocks):
            x = block.forward_into(x, layer, streams, masks, rope)
        return self.norm(x)
