"""Attention beam search scored jointly with the CTC head (and optionally a character LM). NumPy only.

An attention decoder alone may skip a phrase or repeat one until its length
cap: nothing ties its output to the audio. Joint decoding (Watanabe et al.,
"Hybrid CTC/Attention Architecture for End-to-End Speech Recognition", 2017)
ranks each hypothesis ``h`` by::

    (1 - ctc_weight) * log p_att(h) + ctc_weight * log p_ctc(h...) + lm_weight * log p_lm(h) + length_bonus * |h|

where ``p_ctc(h...)`` is the CTC *prefix* probability: the total probability
of every CTC path whose output starts with ``h``. A hypothesis that repeats a
phrase the audio holds once, or skips one, gets a vanishing prefix
probability, so the beam drops it. At ``<eos>`` the prefix probability
becomes the full CTC probability of ``h``.

:class:`CtcPrefixScorer` computes prefix probabilities for many hypotheses and
candidate tokens at once. The CTC forward recursion over frames is a pair of
first-order linear recurrences, so each is a cumulative log-sum-exp
(``np.logaddexp.accumulate``) over frames instead of a Python loop: one
extension of a beam costs a few vectorised passes over ``[T, hyps, candidates]``.

When the caller knows roughly where the next token sits in time (a
Paraformer's CIF says which frames each position integrated), ``extend`` takes
a frame ``window``: the new token is placed inside it only, and a prefix's
forward variables are kept for its window alone. After its window a prefix is
continued by blanks (``total_t = total_end * prod blank``, one cumulative sum
away), before it the prefix is taken as impossible. Both cuts drop
probability mass far from where the token was heard; in exchange an
extension costs ``[window, hyps, candidates]`` instead of ``[T, ...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tokenspeech.decoding.ar import ARResult
from tokenspeech.decoding.base import StepModel
from tokenspeech.decoding.ctc import TokenLM
from tokenspeech.decoding.sampling import log_softmax

NEG_INF = -np.inf


def _first_order_recurrence(inputs: np.ndarray, log_factors: np.ndarray) -> np.ndarray:
    """Solve ``y_t = (y_{t-1} + u_t) * a_t`` (``y_{-1} = 0``) in logs along axis 0.

    ``inputs``: log ``u_t``; ``log_factors``: log ``a_t`` (broadcastable). With
    ``A_t`` the running product of ``a``, ``y_t = A_t * sum_{s<=t} u_s / A_{s-1}``:
    a cumulative sum and a cumulative log-sum-exp, no loop over ``t``.
    """
    cumulative = np.cumsum(np.broadcast_to(log_factors, inputs.shape), axis=0)
    before = np.concatenate([np.zeros_like(cumulative[:1]), cumulative[:-1]], axis=0)
    return cumulative + np.logaddexp.accumulate(inputs - before, axis=0)


def _shifted(values: np.ndarray, first: np.ndarray | float) -> np.ndarray:
    """``values`` one step later along axis 0: ``out[t] = values[t - 1]``, ``out[0] = first``."""
    out = np.empty_like(values)
    out[0] = first
    out[1:] = values[:-1]
    return out


@dataclass(frozen=True)
class CtcPrefix:
    """CTC forward variables of one hypothesis: log P(frames 0..t emit ``h``, path ends in a token / in blank).

    The arrays cover frames ``start .. start + len - 1`` (all frames unless the prefix was made with a window);
    :meth:`CtcPrefixScorer.forward_at` reads them at any frame.
    """

    ends_token: np.ndarray  # [L] float64
    ends_blank: np.ndarray  # [L] float64
    score: float  # log P(h...) (prefix probability); for the empty prefix 0
    start: int = 0  # the frame of the arrays' first element

    @cached_property
    def total(self) -> np.ndarray:
        """log P(frames 0..t emit exactly ``h``) over the frames the arrays cover."""
        return np.logaddexp(self.ends_token, self.ends_blank)


class CtcPrefixScorer:
    """Prefix probabilities of ``h + c`` for hypotheses ``h`` and candidate tokens ``c`` over one utterance.

    ``log_probs [T, V]``: the CTC head's log-softmax for the valid frames.
    The recursions (``x`` the frame log-probabilities, ``phi_t`` the
    probability that ``h`` is complete at frame ``t`` and may be followed by
    ``c``: both of ``h``'s variables, or only ``ends_blank`` when ``c``
    repeats ``h``'s last token)::

        ends_token_t(h+c) = (ends_token_{t-1}(h+c) + phi_{t-1}) * x_t(c)
        ends_blank_t(h+c) = (ends_token_{t-1}(h+c) + ends_blank_{t-1}(h+c)) * x_t(blank)
        P(h+c...)        = sum_t phi_{t-1} * x_t(c)

    are each ``y_t = (y_{t-1} + u_t) * a_t`` (:func:`_first_order_recurrence`).
    """

    def __init__(self, log_probs: np.ndarray, blank: int, eos: int) -> None:
        self.x = np.asarray(log_probs, dtype=np.float64)
        if self.x.ndim != 2 or len(self.x) == 0:
            raise ValueError(f"CTC log-probabilities must be [T > 0, V], got shape {self.x.shape}")
        self.blank, self.eos = blank, eos
        # log prod_{u<=t} x_u(blank), with a leading 0 for t = -1: blank_cumulative[t + 1]
        self.blank_cumulative = np.concatenate([[0.0], np.cumsum(self.x[:, blank])])
        self.blank_log_probs = self.x[:, blank, None, None]  # [T, 1, 1], broadcast over hypotheses and candidates

    @property
    def frames(self) -> int:
        return len(self.x)

    def initial(self) -> CtcPrefix:
        """The empty prefix. It holds no frames: every frame is blank, which :meth:`forward_at` derives."""
        return CtcPrefix(np.empty(0), np.empty(0), 0.0)

    def forward_at(self, prefix: CtcPrefix, empty: bool, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(total, ends_blank)`` of ``prefix`` at frames ``first .. first + count - 1`` (``first`` may be -1).

        Inside the prefix's arrays they are read; after them the prefix is
        continued by blanks; before them (and at frame -1 unless the prefix
        is ``empty``) it is impossible.
        """
        total, blank = np.full(count, NEG_INF), np.full(count, NEG_INF)
        stop, begin, end = first + count, prefix.start, prefix.start + len(prefix.ends_token)
        if empty and first == -1:
            total[0] = blank[0] = 0.0
        low, high = max(first, begin), min(stop, end)
        if low < high:  # inside the arrays
            total[low - first:high - first] = prefix.total[low - begin:high - begin]
            blank[low - first:high - first] = prefix.ends_blank[low - begin:high - begin]
        low = max(first, end, 0)
        if low < stop:  # after them: blanks only
            last_total = float(prefix.total[-1]) if end > begin else (0.0 if empty else NEG_INF)
            tail = last_total + self.blank_cumulative[low + 1:stop + 1] - self.blank_cumulative[end]
            total[low - first:] = blank[low - first:] = tail
        return total, blank

    def full_probability(self, prefix: CtcPrefix, empty: bool = False) -> float:
        """log P(all frames emit exactly ``h``): the score ``h`` gets at its end."""
        return float(self.forward_at(prefix, empty, self.frames - 1, 1)[0][0])

    def extend(self, prefixes: Sequence[CtcPrefix], lasts: Sequence[int | None], candidates: np.ndarray,
               window: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prefix scores of ``prefixes[b] + candidates[b, c]`` ``[B, C]`` and their forward variables ``[B, C, W]`` x 2.

        ``lasts[b]``: the last token of hypothesis ``b`` (None when empty).
        ``window = (start, end)``: the frames the new token may take (default
        all); the forward variables returned cover them, so the new prefixes
        are ``CtcPrefix(..., start=start)``. An ``eos`` candidate scores the
        full CTC probability of ``h`` (its forward variables are meaningless
        and left as they come).
        """
        start, end = (0, self.frames) if window is None else (max(0, window[0]), min(self.frames, window[1]))
        if end <= start:
            raise ValueError(f"empty CTC window {window} for {self.frames} frames")
        candidates = np.asarray(candidates, dtype=np.int64)
        # phi_{t-1} at t = start .. end - 1: h complete at t - 1 and free to emit c next (a repeat of h's last
        # token needs a blank between); before frame 0 only the empty prefix is complete (probability 1)
        gathered = [self.forward_at(p, last is None, start - 1, end - start) for p, last in zip(prefixes, lasts)]
        token_total = np.stack([g[0] for g in gathered], axis=1)  # [W, B]
        token_blank = np.stack([g[1] for g in gathered], axis=1)  # [W, B]
        last_tokens = np.array([-1 if last is None else last for last in lasts])  # -1: empty, never a token
        repeat = candidates == last_tokens[:, None]  # [B, C]
        phi_prev = np.where(repeat[None], token_blank[:, :, None], token_total[:, :, None])  # [W, B, C]
        xc = self.x[start:end, candidates]  # [W, B, C]
        ends_token = _first_order_recurrence(phi_prev, xc)
        ends_blank = _first_order_recurrence(_shifted(ends_token, NEG_INF), self.blank_log_probs[start:end])
        scores = np.logaddexp.reduce(phi_prev + xc, axis=0)  # [B, C]
        is_eos = candidates == self.eos
        if is_eos.any():
            full = np.array([self.full_probability(p, last is None) for p, last in zip(prefixes, lasts)])
            scores = np.where(is_eos, full[:, None], scores)
        return scores, np.moveaxis(ends_token, 0, -1), np.moveaxis(ends_blank, 0, -1)


@dataclass(frozen=True)
class JointDecodingOptions:
    """Beam search settings; ``lm_weight`` applies when a language model is given."""

    max_length: int
    eos_id: int
    blank_id: int = 0
    beam_size: int = 4
    ctc_weight: float = 0.5
    lm_weight: float = 0.5
    length_bonus: float = 0.0
    pre_beam: int = 0  # candidates per hypothesis from the attention scores; 0: 1.5 x beam_size (at least 4)
    excluded: tuple[int, ...] = (0, 1, 2)  # never emitted: <pad>/blank, <unk>, <bos>

    def __post_init__(self) -> None:
        if self.max_length < 1 or self.beam_size < 1 or self.pre_beam < 0:
            raise ValueError("max_length and beam_size must be >= 1, pre_beam >= 0")
        if not 0 <= self.ctc_weight <= 1 or self.lm_weight < 0:
            raise ValueError("ctc_weight must be in [0, 1] and lm_weight >= 0")

    @property
    def candidates(self) -> int:
        return self.pre_beam or max(4, int(1.5 * self.beam_size))


@dataclass
class _Hypothesis:
    tokens: tuple[int, ...]
    score: float  # the joint score so far
    ctc: CtcPrefix
    lm_history: tuple[int, ...] | None


class JointCtcAttentionDecoder:
    """Beam search over an attention :class:`StepModel` with CTC prefix scores (and a character LM)."""

    def __init__(self, options: JointDecodingOptions, lm: TokenLM | None = None) -> None:
        self.options, self.lm = options, lm
        self.weight_ctc, self.weight_att = options.ctc_weight, 1.0 - options.ctc_weight
        self.weight_lm = options.lm_weight if lm is not None else 0.0

    def run(self, model: StepModel, state: object, first_token: int, ctc_log_probs: np.ndarray) -> ARResult:
        """Decode one utterance: ``state`` has batch size 1 (prompt consumed), ``ctc_log_probs [T, V]`` its CTC head.

        ``ARResult.score`` is the joint score of the best hypothesis; ``finished`` is False when it hit ``max_length``.
        """
        opts, lm = self.options, self.lm
        scorer = CtcPrefixScorer(ctc_log_probs, opts.blank_id, opts.eos_id)
        beams = [_Hypothesis((), 0.0, scorer.initial(), lm.history(()) if lm is not None else None)]
        finished: list[_Hypothesis] = []
        tokens = np.array([[first_token]], dtype=np.int64)
        for _ in range(opts.max_length):
            logits, state = model.step(tokens, state)
            kept, rows = self._advance(beams, logits[:, -1], scorer, finished)
            if not kept or self._settled(kept, finished):
                break
            beams = kept
            state = model.select(state, np.array(rows, dtype=np.int64))
            tokens = np.array([[k.tokens[-1]] for k in kept], dtype=np.int64)
        pool = finished or beams
        best = max(pool, key=lambda h: h.score)
        return ARResult(list(best.tokens), best.score, bool(finished))

    def _advance(self, beams: list[_Hypothesis], logits: np.ndarray, scorer: CtcPrefixScorer,
                 finished: list[_Hypothesis]) -> tuple[list[_Hypothesis], list[int]]:
        """Extend every hypothesis by its best candidates; endings go to ``finished``. Returns the new beam
        and, for each of its hypotheses, the row of its parent."""
        opts, lm = self.options, self.lm
        attention = log_softmax(logits.astype(np.float32)).astype(np.float64)  # [B, V]
        attention[:, list(opts.excluded)] = NEG_INF
        lm_scores = np.stack([lm.log_probs(b.lm_history) for b in beams]).astype(np.float64) if lm else None
        ranking = self.weight_att * attention + (self.weight_lm * lm_scores if lm_scores is not None else 0.0)
        count = min(opts.candidates, attention.shape[1])
        candidates = np.argsort(-ranking, axis=1)[:, :count]  # [B, C]: the pre-beam
        totals = (np.array([b.score for b in beams])[:, None] + opts.length_bonus
                  + np.take_along_axis(ranking, candidates, axis=1))
        if self.weight_ctc > 0:
            ctc_scores, ends_token, ends_blank = scorer.extend(
                [b.ctc for b in beams], [b.tokens[-1] if b.tokens else None for b in beams], candidates)
            totals = totals + self.weight_ctc * (ctc_scores - np.array([b.ctc.score for b in beams])[:, None])
        kept: list[_Hypothesis] = []
        rows: list[int] = []
        for flat in np.argsort(-totals, axis=None)[: 2 * opts.beam_size]:
            row, column = divmod(int(flat), count)
            token, score = int(candidates[row, column]), float(totals[row, column])
            if not np.isfinite(score):
                break
            parent = beams[row]
            if token == opts.eos_id:  # the ending earns no length bonus
                finished.append(_Hypothesis(parent.tokens, score - opts.length_bonus, parent.ctc, None))
            elif len(kept) < opts.beam_size:
                prefix = (CtcPrefix(ends_token[row, column], ends_blank[row, column], float(ctc_scores[row, column]))
                          if self.weight_ctc > 0 else parent.ctc)
                history = lm.history(parent.tokens + (token,)) if lm is not None else None
                kept.append(_Hypothesis(parent.tokens + (token,), score, prefix, history))
                rows.append(row)
        return kept, rows

    def _settled(self, kept: list[_Hypothesis], finished: list[_Hypothesis]) -> bool:
        """Whether the search can stop: a full beam of endings, or (without a length bonus, when scores only
        fall) an ending that no live hypothesis can overtake."""
        if len(finished) >= self.options.beam_size:
            return True
        return (bool(finished) and self.options.length_bonus <= 0
                and max(f.score for f in finished) >= max(k.score for k in kept))
