"""Joint CTC/attention decoding: CTC prefix probabilities against brute force, and a looping decoder kept honest."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.joint_ctc import CtcPrefix, CtcPrefixScorer, JointCtcAttentionDecoder, JointDecodingOptions

BLANK, EOS = 0, 3


def _log_probs(frames: int, vocab: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(frames, vocab))
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, previous = [], None
    for token in path:
        if token != BLANK and token != previous:
            out.append(token)
        previous = token
    return tuple(out)


def _brute_prefix_probabilities(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(output starts with h) for every h, by summing every frame path (small T and V only)."""
    frames, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        output = _collapse(path)
        score = float(sum(log_probs[t, token] for t, token in enumerate(path)))
        for n in range(len(output) + 1):
            prefix = output[:n]
            totals[prefix] = float(np.logaddexp(totals.get(prefix, -np.inf), score))
    return totals


def _extend_along(scorer: CtcPrefixScorer, tokens: tuple[int, ...]) -> float:
    """Prefix score of ``tokens`` reached one token at a time, as the beam search does."""
    prefix, last = scorer.initial(), None
    for token in tokens:
        scores, ends_token, ends_blank = scorer.extend([prefix], [last], np.array([[token]]))
        prefix = type(prefix)(ends_token[0, 0], ends_blank[0, 0], float(scores[0, 0]))
        last = token
    return prefix.score


def test_prefix_scores_match_brute_force_including_repeats() -> None:
    log_probs = _log_probs(frames=5, vocab=4, seed=0)  # tokens 1, 2 (and 3 = EOS, never on a path here)
    log_probs[:, EOS] = -30.0
    log_probs -= np.logaddexp.reduce(log_probs, axis=1, keepdims=True)  # the prefix probability assumes normalised rows
    brute = _brute_prefix_probabilities(log_probs)
    scorer = CtcPrefixScorer(log_probs, BLANK, eos=99)
    for prefix in [(1,), (2,), (1, 2), (1, 1), (2, 2, 1), (1, 2, 1), (1, 1, 2)]:
        assert _extend_along(scorer, prefix) == pytest.approx(brute[prefix], abs=1e-9), prefix


def test_eos_scores_the_whole_sequence_like_ctc_loss() -> None:
    log_probs = _log_probs(frames=30, vocab=6, seed=1)
    scorer = CtcPrefixScorer(log_probs, BLANK, EOS)
    target = (4, 5, 5, 2)
    prefix, last = scorer.initial(), None
    for token in target:
        scores, ends_token, ends_blank = scorer.extend([prefix], [last], np.array([[token]]))
        prefix, last = type(prefix)(ends_token[0, 0], ends_blank[0, 0], float(scores[0, 0])), token
    eos_score, _, _ = scorer.extend([prefix], [last], np.array([[EOS]]))
    nll = torch.nn.functional.ctc_loss(torch.from_numpy(log_probs)[:, None], torch.tensor([target]),
                                       torch.tensor([30]), torch.tensor([4]), blank=BLANK, reduction="sum")
    assert eos_score[0, 0] == pytest.approx(-float(nll), abs=1e-6)


def test_many_hypotheses_and_candidates_in_one_call_equal_one_at_a_time() -> None:
    log_probs = _log_probs(frames=12, vocab=6, seed=2)
    scorer = CtcPrefixScorer(log_probs, BLANK, EOS)
    hypotheses = [(4,), (4, 5), (2, 2)]
    prefixes = []
    for tokens in hypotheses:
        prefix, last = scorer.initial(), None
        for token in tokens:
            s, a, b = scorer.extend([prefix], [last], np.array([[token]]))
            prefix, last = type(prefix)(a[0, 0], b[0, 0], float(s[0, 0])), token
        prefixes.append(prefix)
    candidates = np.array([[1, 4, 5, EOS], [5, 2, 4, 1], [2, 4, EOS, 5]])
    together, _, _ = scorer.extend(prefixes, [h[-1] for h in hypotheses], candidates)
    for row, tokens in enumerate(hypotheses):
        for column, token in enumerate(candidates[row]):
            if token == EOS:
                continue
            assert together[row, column] == pytest.approx(_extend_along(scorer, tokens + (int(token),)), abs=1e-9)


def _extend_windowed(scorer: CtcPrefixScorer, tokens: tuple[int, ...],
                     windows: list[tuple[int, int]]) -> tuple[float, float]:
    """``(prefix score, full probability)`` of ``tokens``, each placed only within its window, from an empty
    prefix that holds no frames (as the position search starts)."""
    prefix, last = scorer.initial(), None
    for token, window in zip(tokens, windows):
        scores, ends_token, ends_blank = scorer.extend([prefix], [last], np.array([[token]]), window)
        prefix, last = CtcPrefix(ends_token[0, 0], ends_blank[0, 0], float(scores[0, 0]), window[0]), token
    return prefix.score, scorer.full_probability(prefix, empty=not tokens)


def test_whole_utterance_windows_change_nothing() -> None:
    log_probs = _log_probs(frames=20, vocab=6, seed=3)
    scorer = CtcPrefixScorer(log_probs, BLANK, EOS)
    tokens = (4, 5, 5, 2)
    score, full = _extend_windowed(scorer, tokens, [(0, 20)] * len(tokens))
    assert score == pytest.approx(_extend_along(scorer, tokens), abs=1e-9)
    nll = torch.nn.functional.ctc_loss(torch.from_numpy(log_probs)[:, None], torch.tensor([tokens]),
                                       torch.tensor([20]), torch.tensor([4]), blank=BLANK, reduction="sum")
    assert full == pytest.approx(-float(nll), abs=1e-6)
    assert _extend_windowed(scorer, (), [])[1] == pytest.approx(float(log_probs[:, BLANK].sum()), abs=1e-9)


def test_windows_around_where_each_token_was_heard_keep_its_probability_and_others_lose_it() -> None:
    """Frames that clearly say 4 at frame 3, 5 at frame 8 and 2 at frame 14 (blank elsewhere): windows of a few
    frames around those frames give the whole-utterance scores; a window that misses the 5 makes it unlikely."""
    frames, heard = 20, {3: 4, 8: 5, 14: 2}
    logits = np.full((frames, 6), -10.0)  # off-window mass e^-10 a frame: negligible
    for t in range(frames):
        logits[t, heard.get(t, BLANK)] = 0.0
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scorer = CtcPrefixScorer(log_probs, BLANK, EOS)
    tokens = (4, 5, 2)
    score, full = _extend_windowed(scorer, tokens, [(1, 6), (6, 11), (12, 17)])
    assert score == pytest.approx(_extend_along(scorer, tokens), abs=1e-3)
    assert full == pytest.approx(_extend_windowed(scorer, tokens, [(0, frames)] * 3)[1], abs=1e-3)
    missed, _ = _extend_windowed(scorer, tokens, [(1, 6), (10, 13), (12, 17)])
    assert missed < score - 5
    with pytest.raises(ValueError, match="empty CTC window"):
        scorer.extend([scorer.initial()], [None], np.array([[4]]), (25, 30))


class _LoopingDecoder:
    """An attention 'model' that ignores the audio: it always prefers token 4, then 5, then <eos>."""

    vocab = 6

    def step(self, tokens: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        logits = np.full((len(tokens), tokens.shape[1], self.vocab), -4.0, dtype=np.float32)
        logits[..., 4] = 0.0
        logits[..., 5] = -1.0
        logits[..., EOS] = -3.0
        return logits, None

    def select(self, state: None, rows: np.ndarray) -> None:
        return None


def _ctc_saying(tokens: list[int], frames_each: int = 3, vocab: int = 6) -> np.ndarray:
    """CTC log-probabilities that clearly spell ``tokens`` (each for a few frames, blanks between)."""
    rows = []
    for token in tokens:
        rows += [token] * frames_each + [BLANK]
    lp = np.full((len(rows), vocab), np.log(0.02))
    for t, token in enumerate(rows):
        lp[t, token] = np.log(1 - 0.02 * (vocab - 1))
    return lp


def test_ctc_stops_the_attention_decoder_from_looping() -> None:
    model = _LoopingDecoder()
    greedy = ARDecoder(ARDecodingOptions(max_length=20, eos_id=EOS)).run(model, None, np.array([2]))[0]
    assert greedy.tokens == [4] * 20 and not greedy.finished  # loops to the length cap
    beam = ARDecoder(ARDecodingOptions(max_length=20, eos_id=EOS, beam_size=4)).run(model, None, np.array([2]))[0]
    assert beam.tokens == []  # or says nothing at all
    joint = JointCtcAttentionDecoder(JointDecodingOptions(max_length=20, eos_id=EOS, beam_size=4, ctc_weight=0.5))
    result = joint.run(model, None, 2, _ctc_saying([4, 5, 4]))
    assert result.tokens == [4, 5, 4] and result.finished


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="ctc_weight"):
        JointDecodingOptions(max_length=5, eos_id=EOS, ctc_weight=1.5)
    with pytest.raises(ValueError, match="beam_size"):
        JointDecodingOptions(max_length=5, eos_id=EOS, beam_size=0)
    with pytest.raises(ValueError, match=r"\[T > 0, V\]"):
        CtcPrefixScorer(np.zeros((0, 4)), BLANK, EOS)
