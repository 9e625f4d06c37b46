"""ASR heads over the shared encoder: CIF predictor, parallel (Paraformer) decoder, attention decoder.

Axes: B batch, T encoder frames, N output tokens, L decoder input length,
D model dim, V vocabulary.

The decoders are :class:`tokenspeech.models.transformer.Transformer` stacks
with cross-attention; this module only adds embeddings, output projections
and the masks the parallel decoder needs for blockwise (semi-AR) training.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenspeech.models.transformer import LayerCache, Transformer, TransformerConfig, attention_mask


class CifPredictor(nn.Module):
    """Per-frame firing weight ``alpha in (0, 1)`` of continuous integrate-and-fire: ``[B, T, D] -> [B, T]``.

    A frame-wise MLP (no temporal context of its own: the encoder supplies
    it), so streaming needs no cache here.
    """

    def __init__(self, dim: int, dropout: float, initial_rate: float = 0.55) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim, 1))
        # start near the corpus's characters per 40 ms frame, so the quantity loss starts small
        nn.init.constant_(self.net[-1].bias, math.log(initial_rate / (1 - initial_rate)))

    def forward(self, encoded: Tensor) -> Tensor:
        return torch.sigmoid(self.net(encoded).squeeze(-1))


def cif_weights(alphas: Tensor, num_tokens: Tensor, max_tokens: int) -> Tensor:
    """How much of frame ``t`` goes into token ``k``: ``W [B, N, T]`` with ``N = max_tokens``.

    With ``c_t`` the running sum of ``alphas [B, T]``, token ``k`` integrates
    the part of ``[c_{t-1}, c_t]`` that lies in ``[k, k + 1]``; rows
    ``k >= num_tokens [B]`` are zero. Acoustic embeddings are ``W @ h``.
    This is the training-time (differentiable, vectorised) form of the
    firing rule in :mod:`tokenspeech.decoding.cif`.
    """
    upper = torch.cumsum(alphas, dim=1)[:, None, :]  # [B, 1, T]
    lower = upper - alphas[:, None, :]
    k = torch.arange(max_tokens, device=alphas.device, dtype=alphas.dtype)[None, :, None]  # [1, N, 1]
    weights = torch.clamp(torch.minimum(upper, k + 1) - torch.maximum(lower, k), min=0.0)
    valid = torch.arange(max_tokens, device=alphas.device)[None, :] < num_tokens[:, None]
    return weights * valid[:, :, None].to(weights.dtype)


def scale_alphas(alphas: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
    """Zero padded frames and rescale each row of ``alphas [B, T]`` to sum to ``targets [B]`` (training)."""
    valid = torch.arange(alphas.shape[1], device=alphas.device)[None, :] < lengths[:, None]
    alphas = alphas * valid.to(alphas.dtype)
    total = alphas.sum(dim=1, keepdim=True).clamp(min=1e-4)
    return alphas * (targets[:, None].to(alphas.dtype) / total)


def fire_frames(weights: Tensor) -> Tensor:
    """Frame where each token's integration completes: ``W [B, N, T] -> [B, N]`` (last frame with weight)."""
    frames = torch.arange(weights.shape[2], device=weights.device)[None, None, :]
    return torch.where(weights > 1e-6, frames, torch.zeros_like(frames)).amax(dim=2)


def run_layers(transformer: Transformer, x: Tensor, mask: Tensor | None, memory: Tensor,
               memory_mask: Tensor | None) -> Tensor:
    """Run a cross-attention ``transformer`` with explicit masks ``[B, 1, L, L]`` / ``[B, 1, L, T]``."""
    for block, kv in zip(transformer.blocks, transformer.memory_kv(memory)):
        x, _ = block(x, mask, None, kv, memory_mask)
    return transformer.norm(x)


class ParallelDecoder(nn.Module):
    """Paraformer decoder: every position decoded at once from acoustic embeddings ``[B, N, D]``.

    Inputs are CIF embeddings, optionally mixed with token embeddings
    (``embed``): glancing (GLM) training, and the label context of earlier
    blocks in semi-AR streaming.
    """

    def __init__(self, config: TransformerConfig, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.transformer = Transformer(config)
        self.out = nn.Linear(config.dim, vocab_size)

    def forward(self, inputs: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor,
                self_mask: Tensor | None = None, memory_mask: Tensor | None = None) -> Tensor:
        """``inputs [B, N, D]`` -> logits ``[B, N, V]``; default masks hide padding only."""
        if self_mask is None:
            self_mask = attention_mask(lengths, inputs.shape[1], causal=False)
        if memory_mask is None:
            memory_mask = attention_mask(memory_lengths, memory.shape[1], causal=False)[:, :, :1, :]
        return self.out(run_layers(self.transformer, inputs, self_mask, memory, memory_mask))

    def step(self, inputs: Tensor, cache: list[LayerCache],
             memory_kv: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[LayerCache]]:
        """A new block ``inputs [B, S, D]`` after cached context, seeing all memory -> logits, new cache."""
        hidden, cache = self.transformer.step(inputs, cache, memory_kv)
        return self.out(hidden), cache


class AttentionDecoder(nn.Module):
    """Autoregressive Transformer decoder over characters with cross-attention to the encoder."""

    def __init__(self, config: TransformerConfig, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.dim)
        self.transformer = Transformer(config)
        self.out = nn.Linear(config.dim, vocab_size)

    def forward(self, tokens: Tensor, lengths: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """Teacher forcing: ``tokens [B, L]`` (BOS first) -> next-token logits ``[B, L, V]``."""
        hidden = self.transformer(self.embed(tokens), lengths, memory, memory_lengths)
        return self.out(hidden)

    def step(self, tokens: Tensor, cache: list[LayerCache], memory_kv: list[tuple[Tensor, Tensor]],
             memory_mask: Tensor | None) -> tuple[Tensor, list[LayerCache]]:
        """New tokens ``[B, S]`` after the cached ones -> logits ``[B, S, V]``, new cache."""
        hidden, cache = self.transformer.step(self.embed(tokens), cache, memory_kv, memory_mask)
        return self.out(hidden), cache


def block_masks(fire: Tensor, lengths: Tensor, memory_lengths: Tensor, chunk: int,
                memory_frames: int) -> tuple[Tensor, Tensor]:
    """Semi-AR training masks from token fire frames ``fire [B, N]`` and the encoder ``chunk``.

    Token ``k`` belongs to block ``fire_k // chunk``; it sees tokens of its
    own and earlier blocks (``self [B, 1, N, N]``) and encoder frames up to
    the end of its block (``memory [B, 1, N, T]``) - what it sees when the
    streaming decoder handles that block.
    """
    block = torch.div(fire, chunk, rounding_mode="floor")  # [B, N]
    tokens = fire.shape[1]
    valid = torch.arange(tokens, device=fire.device)[None, :] < lengths[:, None]
    self_mask = (block[:, None, :] <= block[:, :, None]) & valid[:, None, :]
    self_mask = self_mask | torch.eye(tokens, dtype=torch.bool, device=fire.device)[None]
    frames = torch.arange(memory_frames, device=fire.device)[None, None, :]
    memory_mask = (frames < (block[:, :, None] + 1) * chunk) & (frames < memory_lengths[:, None, None])
    memory_mask[:, :, 0] = True  # never an empty row
    return self_mask[:, None], memory_mask[:, None]
