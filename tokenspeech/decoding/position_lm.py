"""Language-model beam search over the positions of a parallel decoder (Paraformer), NumPy only.

A Paraformer decodes every character at once: its CIF predictor fixes the
number of positions and the decoder gives each position a distribution over
characters, independently of the others. A character LM can still join in
after that one pass: a left-to-right beam search over the positions, each
hypothesis extended by one of the few best characters of the next position,
scored ``sum log p_decoder + lm_weight * log p_lm`` (sentence end included).
The network runs once, as before; the search costs one LM lookup per
hypothesis and position (far fewer than CTC's per-frame lookups). The length
is fixed by CIF, so no length bonus is needed; count errors stay errors.

The LM alone pulls towards short words: with it, the shipped Paraformer
wrote 9 % more words than the references ("or ganization"), word insertions
9.6 % against CTC's 5.0 %. ``space_penalty`` is subtracted from the space
token's log-probability at every position, so the search splits a word only
where the decoder is surer of the space (see docs/asr.md for the values tried).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tokenspeech.decoding.ctc import TokenLM


@dataclass(frozen=True)
class PositionBeamOptions:
    """``beam_size`` hypotheses; each position offers its ``token_beam`` likeliest tokens (``excluded`` never).

    ``space_penalty`` (natural-log units) is taken off token ``space_id``'s log-probability at every position.
    """

    beam_size: int = 8
    token_beam: int = 8
    lm_weight: float = 0.5
    excluded: tuple[int, ...] = ()
    space_id: int | None = None
    space_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.token_beam < 1:
            raise ValueError("beam_size and token_beam must be >= 1")
        if self.lm_weight < 0:
            raise ValueError("lm_weight must be >= 0")
        if self.space_penalty < 0:
            raise ValueError("space_penalty must be >= 0")
        if self.space_penalty and self.space_id is None:
            raise ValueError("a space_penalty needs the space_id it applies to")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def position_beam_search(logits: np.ndarray, lm: TokenLM, options: PositionBeamOptions) -> tuple[int, ...]:
    """The best token sequence for ``logits [N, V]`` (one row per position) under decoder + weighted LM."""
    log_probs = _log_softmax(np.asarray(logits, dtype=np.float64))
    if options.excluded:
        log_probs[:, list(options.excluded)] = -np.inf
    if options.space_penalty and options.space_id is not None:
        log_probs[:, options.space_id] -= options.space_penalty
    k = min(options.token_beam, log_probs.shape[1])
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for row in log_probs:
        candidates = np.argpartition(-row, k - 1)[:k]
        candidates = candidates[np.isfinite(row[candidates])]
        extended = []
        for tokens, score in beams:
            lm_row = lm.log_probs(lm.history(tokens))
            for token in candidates.tolist():
                extended.append((tokens + (token,), score + row[token] + options.lm_weight * lm_row[token]))
        extended.sort(key=lambda item: item[1], reverse=True)
        beams = extended[: options.beam_size]
    return max(beams, key=lambda item: item[1] + options.lm_weight * _end_score(lm, item[0]))[0]


def _end_score(lm: TokenLM, tokens: Sequence[int]) -> float:
    return float(lm.log_probs(lm.history(tokens))[lm.boundary])
