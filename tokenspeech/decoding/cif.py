"""Continuous integrate-and-fire (CIF) at inference, offline and streaming. NumPy only.

Axes: T encoder frames, D hidden dim, N fired tokens.

Each frame carries a weight ``alpha_t`` (the model's CIF predictor). Weights
are integrated from left to right; every time the running sum ``c_t``
crosses an integer, a token fires. Token ``k`` is the weighted sum of the
frames, frame ``t`` contributing the part of ``[c_{t-1}, c_t]`` inside
``[k, k + 1]`` (a frame that crosses a boundary splits between two tokens).
At the end of the utterance the leftover weight fires one more token when it
is at least ``tail_threshold`` (scaled to unit weight), so an utterance fires
``round(sum(alpha))`` tokens (halves round up).

Streaming carries the running sum and the partial embedding of the token
being integrated in :class:`CifState`, so feeding frames in pieces fires the
same tokens as feeding them at once. The training-time PyTorch form is
``tokenspeech.models.asr_heads.cif_weights`` (same rule, vectorised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4  # a running sum this close below an integer fires (float rounding of scaled weights)


@dataclass(frozen=True)
class CifOutput:
    """Fired tokens: embeddings ``[N, D]``, first frame with weight ``starts [N]``, firing frame ``fires [N]``."""

    embeddings: np.ndarray
    starts: np.ndarray
    fires: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> CifOutput:
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, dim), dtype=np.float32), none, none)


@dataclass(frozen=True)
class CifState:
    """Integration carried across streaming pieces."""

    total: float = 0.0  # running sum of all weights so far
    fired: int = 0  # tokens fired so far
    frames: int = 0  # frames consumed so far
    partial: np.ndarray | None = None  # [D] weighted sum of the token being integrated
    partial_start: int = -1  # first frame of that token (-1: none yet)


def _token_weights(lower: np.ndarray, upper: np.ndarray, first: int, last: int) -> np.ndarray:
    """Weights ``[last - first + 1, T]`` of tokens ``first..last`` from frame intervals ``[lower, upper]``."""
    k = np.arange(first, last + 1, dtype=np.float64)[:, None]
    return np.clip(np.minimum(upper[None, :], k + 1) - np.maximum(lower[None, :], k), 0.0, None)


def cif_step(alphas: np.ndarray, hidden: np.ndarray, state: CifState = CifState()) -> tuple[CifOutput, CifState]:
    """Integrate ``alphas [T]`` over ``hidden [T, D]`` after ``state``; returns tokens completed here."""
    alphas = np.asarray(alphas, dtype=np.float64)
    hidden = np.asarray(hidden, dtype=np.float64)
    upper = state.total + np.cumsum(alphas)
    lower = upper - alphas
    end_total = float(upper[-1]) if len(alphas) else state.total
    completed = max(state.fired, int(np.floor(end_total + EPSILON)))
    weights = _token_weights(lower, upper, state.fired, completed)  # the last row is the next partial token
    sums = weights @ hidden if len(alphas) else np.zeros((weights.shape[0], hidden.shape[1]))
    if state.partial is not None:
        sums[0] += state.partial
    has_weight = weights > 0
    starts = np.where(has_weight.any(axis=1), has_weight.argmax(axis=1) + state.frames, -1)
    if state.partial_start >= 0:
        starts[0] = state.partial_start
    count = completed - state.fired
    fires = np.array([state.frames + int(np.argmax(upper >= k + 1 - EPSILON))
                      for k in range(state.fired, completed)], dtype=np.int64)
    output = CifOutput(sums[:count].astype(np.float32), starts[:count].astype(np.int64), fires)
    new_state = CifState(end_total, completed, state.frames + len(alphas), sums[count], int(starts[count]))
    return output, new_state


def cif_finish(state: CifState, tail_threshold: float = 0.5) -> CifOutput:
    """Fire the leftover weight as a last token when it reaches ``tail_threshold`` (end of utterance)."""
    residual = state.total - state.fired
    dim = 0 if state.partial is None else state.partial.shape[0]
    if state.partial is None or residual < tail_threshold:
        return CifOutput.empty(dim)
    embedding = (state.partial / residual).astype(np.float32)[None]
    start = state.partial_start if state.partial_start >= 0 else max(state.frames - 1, 0)
    return CifOutput(embedding, np.array([start], dtype=np.int64), np.array([max(state.frames - 1, 0)]))


def cif_fire(alphas: np.ndarray, hidden: np.ndarray, tail_threshold: float = 0.5) -> CifOutput:
    """Offline CIF of one utterance: ``alphas [T]``, ``hidden [T, D]`` -> all tokens, tail included."""
    body, state = cif_step(alphas, hidden)
    tail = cif_finish(state, tail_threshold)
    if not len(tail.fires):
        return body
    return CifOutput(np.concatenate([body.embeddings, tail.embeddings]), np.concatenate([body.starts, tail.starts]),
                     np.concatenate([body.fires, tail.fires]))
