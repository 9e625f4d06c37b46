"""CTC decoding: greedy, prefix beam search, and Viterbi forced alignment. NumPy only.

Axes: T frames, V vocabulary (``blank`` included), N output tokens.
Inputs are log-probabilities ``[T, V]`` of one utterance (log-softmax
already applied; padded frames removed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
    """Prefix beam search settings; the ``lm_*`` ones apply when a language model is given."""

    beam_size: int = 8
    token_beam: int = 8  # per frame, only the best ``token_beam`` tokens extend a prefix
    blank: int = 0
    lm_weight: float = 0.8  # score = log p_ctc + lm_weight * log p_lm + length_bonus * tokens
    length_bonus: float = 1.5  # per token: offsets the LM's cost of every extra character
    blank_skip: float = 1.0  # frames whose blank probability exceeds this extend no prefix (1.0: never skip)

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.token_beam < 1:
            raise ValueError("beam_size and token_beam must be >= 1")
        if self.lm_weight < 0 or not 0 < self.blank_skip <= 1:
            raise ValueError("lm_weight must be >= 0 and blank_skip in (0, 1]")


class TokenLM(Protocol):
    """A left-to-right token language model over characters (:class:`tokenspeech.decoding.char_lm.CharNgramLM`,
    :class:`tokenspeech.decoding.word_lm.WordLexiconLM`)."""

    boundary: int  # the token that ends a sentence
    kind: str  # which kind of model: the recogniser's default search settings depend on it

    def history(self, previous: Sequence[int]) -> tuple[int, ...]: ...

    def log_probs(self, history: tuple[int, ...]) -> np.ndarray: ...


def _add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (numpy's scalar version is several times slower here)."""
    if a < b:
        a, b = b, a
    return a if b == NEG_INF else a + math.log1p(math.exp(b - a))


class CtcPrefixBeam:
    """Prefix beam search over frames as they come: :meth:`push` pieces ``[T, V]``, read :meth:`best` or :meth:`ranked`.

    Hypotheses are ranked by total probability over all CTC paths that
    collapse to them: unlike greedy decoding this sums the paths of a
    prefix, so a label spread thinly over several frames can beat a blank
    that wins each frame. With ``lm`` (shallow fusion) prefixes are ranked by
    ``log p_ctc + lm_weight * log p_lm + length_bonus * len`` and the LM's
    end-of-sentence probability joins the final ranking. The search is
    frame by frame, so pushing a stream in pieces gives exactly the result
    of pushing it whole.
    """

    def __init__(self, options: CtcBeamOptions = CtcBeamOptions(), lm: TokenLM | None = None) -> None:
        self.options, self.lm = options, lm
        self.weight = options.lm_weight if lm is not None else 0.0
        self.bonus = options.length_bonus if lm is not None else 0.0
        self.skip = math.log(options.blank_skip) if options.blank_skip < 1 else math.inf
        # prefix -> [log p ending in blank, log p ending in its last token, weighted LM log p of the prefix]
        self.beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF, 0.0]}
        self._lm_next: dict[tuple[int, ...], np.ndarray] = {}  # the LM after each prefix in the beam

    def _lm_after(self, prefix: tuple[int, ...]) -> np.ndarray:
        """The LM's log-probabilities after ``prefix``, kept while the prefix stays in the beam (a prefix is
        extended on most frames, and the LM's own history lookup costs more than this one)."""
        cached = self._lm_next.get(prefix)
        if cached is None:
            lm = self.lm
            cached = self._lm_next[prefix] = lm.log_probs(lm.history(prefix))
        return cached

    def _rank(self, item: tuple[tuple[int, ...], list[float]]) -> float:
        prefix, (p_blank, p_token, lm_score) = item
        return _add(p_blank, p_token) + lm_score + self.bonus * len(prefix)

    def _final(self, item: tuple[tuple[int, ...], list[float]]) -> float:
        lm = self.lm
        end = self.weight * float(self._lm_after(item[0])[lm.boundary]) if lm is not None else 0.0
        return self._rank(item) + end

    def push(self, log_probs: np.ndarray) -> None:
        """Advance over frames ``[T, V]`` of log-probabilities."""
        options, lm, blank = self.options, self.lm, self.options.blank
        beams = self.beams
        for row in np.asarray(log_probs, dtype=np.float64):
            frame = row.tolist()
            if frame[blank] > self.skip:  # (almost) surely blank: no prefix grows, each one's paths go on
                beams = {prefix: [_add(p_blank, p_token) + frame[blank],
                                  p_token + frame[prefix[-1]] if prefix else NEG_INF, lm_score]
                         for prefix, (p_blank, p_token, lm_score) in beams.items()}
                continue
            order = np.argsort(-row)[: options.token_beam + 1]
            candidates = [int(t) for t in order if t != blank][: options.token_beam]
            grown: dict[tuple[int, ...], list[float]] = {}
            for prefix, (p_blank, p_token, lm_score) in beams.items():
                total = _add(p_blank, p_token)
                stay = grown.setdefault(prefix, [NEG_INF, NEG_INF, lm_score])
                stay[0] = _add(stay[0], total + frame[blank])
                if prefix:  # the last token repeated without a blank collapses into the same prefix
                    stay[1] = _add(stay[1], p_token + frame[prefix[-1]])
                next_lm = self._lm_after(prefix) if lm is not None else None
                for token in candidates:
                    longer = prefix + (token,)
                    entry = grown.get(longer)
                    if entry is None:
                        gain = self.weight * float(next_lm[token]) if next_lm is not None else 0.0
                        entry = grown[longer] = [NEG_INF, NEG_INF, lm_score + gain]
                    source = p_blank if prefix and token == prefix[-1] else total
                    entry[1] = _add(entry[1], source + frame[token])
            beams = dict(sorted(grown.items(), key=self._rank, reverse=True)[: options.beam_size])
            if lm is not None:
                self._lm_next = {prefix: self._lm_next[prefix] for prefix in beams if prefix in self._lm_next}
        self.beams = beams

    def stable(self) -> tuple[int, ...]:
        """The tokens every hypothesis starts with: an interim result that later ones only extend.

        Every future hypothesis extends one of today's, so this prefix never
        shrinks, and the final best hypothesis starts with it.
        """
        prefixes = list(self.beams)
        shortest = min(prefixes, key=len)
        size = 0
        while size < len(shortest) and all(p[size] == shortest[size] for p in prefixes):
            size += 1
        return shortest[:size]

    def ranked(self) -> list[CtcPath]:
        """Every hypothesis as a finished sentence, best first; ``score`` is the ranking score (no frame spans)."""
        ranked = sorted(self.beams.items(), key=self._final, reverse=True)
        return [CtcPath(prefix, (), (), self._final((prefix, scores))) for prefix, scores in ranked]


def ctc_prefix_beam_search(log_probs: np.ndarray, options: CtcBeamOptions = CtcBeamOptions(),
                           lm: TokenLM | None = None) -> list[CtcPath]:
    """Hypotheses of a whole utterance ``[T, V]``, best first (:class:`CtcPrefixBeam`; use :func:`ctc_align`
    for frame spans)."""
    search = CtcPrefixBeam(options, lm)
    search.push(log_probs)
    return search.ranked()


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
