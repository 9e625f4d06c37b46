"""Token selection from logits: greedy, temperature, top-k, top-p. NumPy only.

Randomness comes from a ``numpy.random.Generator`` the caller seeds, so a
fixed seed gives identical tokens on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick a token. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1.0 = no nucleus cut

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def filter_logits(logits: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """Apply temperature, top-k and top-p to ``logits [..., V]``; removed entries become -inf."""
    out = logits.astype(np.float32) / max(options.temperature, 1e-6)
    if options.top_k and options.top_k < out.shape[-1]:
        kth = np.partition(out, -options.top_k, axis=-1)[..., -options.top_k, None]
        out = np.where(out < kth, -np.inf, out)
    if options.top_p < 1.0:
        order = np.argsort(-out, axis=-1)
        sorted_probs = np.take_along_axis(softmax(out), order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop_sorted = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= options.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        out = np.where(drop, -np.inf, out)
    return out


def select_tokens(logits: np.ndarray, options: SamplingOptions, rng: np.random.Generator) -> np.ndarray:
    """One token per row of ``logits [..., V]`` -> ``[...] int64``."""
    if options.temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    probs = softmax(filter_logits(logits, options))
    flat = probs.reshape(-1, probs.shape[-1]).astype(np.float64)
    flat /= flat.sum(axis=-1, keepdims=True)
    # inverse-CDF sampling: one uniform number per row, reproducible for a seed
    uniform = rng.random(flat.shape[0])[:, None]
    choice = (np.cumsum(flat, axis=-1) < uniform).sum(axis=-1)
    return np.minimum(choice, flat.shape[-1] - 1).reshape(probs.shape[:-1]).astype(np.int64)
