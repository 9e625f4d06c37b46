"""CTC decoding: greedy, prefix beam search, and Viterbi forced alignment. NumPy only.

Axes: T frames, V vocabulary (``blank`` included), N output tokens.
Inputs are log-probabilities ``[T, V]`` of one utterance (log-softmax
already applied; padded frames removed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

NEG_INF = -np.inf


@dataclass(frozen=True)
class CtcPath:
    """Decoded tokens with the frame span ``[start, end)`` where each was emitted."""

    tokens: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    score: float = 0.0


def ctc_greedy(log_probs: np.ndarray, blank: int = 0) -> CtcPath:
    """Best frame-wise path, repeats merged and blanks removed; spans are the runs of each token."""
    best = np.asarray(log_probs).argmax(axis=-1)
    tokens, starts, ends = [], [], []
    previous = blank
    for frame, token in enumerate(best.tolist()):
        if token != blank and token == previous:
            ends[-1] = frame + 1
        elif token != blank:
            tokens.append(token)
            starts.append(frame)
            ends.append(frame + 1)
        previous = token
    score = float(np.take_along_axis(log_probs, best[:, None], axis=1).sum()) if len(best) else 0.0
    return CtcPath(tuple(tokens), tuple(starts), tuple(ends), score)


@dataclass(frozen=True)
class CtcBeamOptions:
    beam_size: int = 8
    token_beam: int = 8  # per frame, only the best ``token_beam`` tokens extend a prefix
    blank: int = 0

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.token_beam < 1:
            raise ValueError("beam_size and token_beam must be >= 1")


def _extend(beams: dict[tuple[int, ...], tuple[float, float]], frame: np.ndarray,
            candidates: list[int], blank: int) -> dict[tuple[int, ...], list[float]]:
    """One frame of prefix beam search: ``beams`` maps prefix -> (log p ending in blank, in non-blank)."""
    out: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
    for prefix, (p_blank, p_token) in beams.items():
        total = np.logaddexp(p_blank, p_token)
        stay = out[prefix]
        stay[0] = np.logaddexp(stay[0], total + frame[blank])
        if prefix:  # the last token repeated without a blank collapses into the same prefix
            stay[1] = np.logaddexp(stay[1], p_token + frame[prefix[-1]])
        for token in candidates:
            grown = out[prefix + (token,)]
            source = p_blank if prefix and token == prefix[-1] else total
            grown[1] = np.logaddexp(grown[1], source + frame[token])
    return out


def ctc_prefix_beam_search(log_probs: np.ndarray, options: CtcBeamOptions = CtcBeamOptions()) -> list[CtcPath]:
    """Hypotheses ranked by total probability over all CTC paths that collapse to them (best first).

    Unlike greedy decoding this sums the paths of a prefix, so a label
    spread thinly over several frames can beat a blank that wins each frame.
    Returned paths carry no frame spans (use :func:`ctc_align` for those).
    """
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for frame in np.asarray(log_probs, dtype=np.float64):
        order = np.argsort(-frame)[: options.token_beam + 1]
        candidates = [int(t) for t in order if t != options.blank][: options.token_beam]
        grown = _extend(beams, frame, candidates, options.blank)
        ranked = sorted(grown.items(), key=lambda item: -np.logaddexp(*item[1]))[: options.beam_size]
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked}
    ranked = sorted(beams.items(), key=lambda item: -np.logaddexp(*item[1]))
    return [CtcPath(prefix, (), (), float(np.logaddexp(*scores))) for prefix, scores in ranked]


def ctc_align(log_probs: np.ndarray, tokens: list[int] | tuple[int, ...], blank: int = 0) -> CtcPath:
    """Viterbi alignment of known ``tokens [N]`` to ``log_probs [T, V]``: per-token frame spans.

    Raises ``ValueError`` when the utterance is too short for the tokens
    (CTC needs one frame per token plus one per repeated pair).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    labels = [blank]
    for token in tokens:
        labels += [int(token), blank]
    frames, states = lp.shape[0], len(labels)
    if not tokens:
        return CtcPath((), (), (), float(lp[:, blank].sum()))
    labels_arr = np.array(labels)
    # a state may skip the blank before it when its label differs from the label two back
    skip = np.zeros(states, dtype=bool)
    skip[2:] = (labels_arr[2:] != blank) & (labels_arr[2:] != labels_arr[:-2])
    score = np.full(states, NEG_INF)
    score[:2] = lp[0, labels_arr[:2]]
    back = np.zeros((frames, states), dtype=np.int64)
    for t in range(1, frames):
        moves = np.stack([score, np.r_[NEG_INF, score[:-1]], np.where(skip, np.r_[NEG_INF, NEG_INF, score[:-2]], NEG_INF)])
        choice = moves.argmax(axis=0)
        back[t] = np.arange(states) - choice
        score = moves[choice, np.arange(states)] + lp[t, labels_arr]
    end = states - 1 if score[-1] >= score[-2] else states - 2
    if not np.isfinite(score[end]):
        raise ValueError(f"{len(tokens)} tokens cannot be aligned to {frames} frames")
    return _spans_from_states(_backtrack(back, end), labels_arr, tuple(int(t) for t in tokens), float(score[end]))


def _backtrack(back: np.ndarray, end: int) -> list[int]:
    path = [end]
    for t in range(back.shape[0] - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def _spans_from_states(path: list[int], labels: np.ndarray, tokens: tuple[int, ...], score: float) -> CtcPath:
    """Frame spans of each token from a state path (states ``2k + 1`` are token ``k``)."""
    starts, ends = [-1] * len(tokens), [0] * len(tokens)
    for frame, state in enumerate(path):
        if state % 2 == 1:
            k = state // 2
            starts[k] = frame if starts[k] < 0 else starts[k]
            ends[k] = frame + 1
    return CtcPath(tokens, tuple(starts), tuple(ends), score)
