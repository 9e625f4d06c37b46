"""AR decoding strategies on toy step models with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions, MinLength
from tokenspeech.decoding.sampling import SamplingOptions, filter_logits, select_tokens

EOS, V = 0, 6


class TableModel:
    """Next-token log-probabilities looked up from the tokens so far (state = history per row)."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]]) -> None:
        self.table = table

    def step(self, tokens: np.ndarray, state: list[tuple[int, ...]]):
        state = [history + tuple(int(t) for t in row) for history, row in zip(state, tokens)]
        logits = np.full((len(state), tokens.shape[1], V), -30.0, dtype=np.float32)
        for i, history in enumerate(state):
            for token, prob in self.table.get(history[1:], {EOS: 1.0}).items():
                logits[i, -1, token] = np.log(prob)
        return logits, state

    def select(self, state, rows):
        return [state[int(r)] for r in rows]


# Greedy takes 1 (0.6) then is stuck with 0.4/0.3/0.3; beam finds 2 -> 3 (0.4 * 0.9).
TABLE = {(): {1: 0.6, 2: 0.4}, (1,): {3: 0.4, 4: 0.3, 5: 0.3}, (2,): {3: 0.9, 4: 0.1},
         (1, 3): {EOS: 1.0}, (2, 3): {EOS: 1.0}}


def test_greedy_and_beam_on_a_known_table() -> None:
    model = TableModel(TABLE)
    start = np.array([9])
    greedy = ARDecoder(ARDecodingOptions(max_length=5, eos_id=EOS)).run(model, [()], start)
    beam = ARDecoder(ARDecodingOptions(max_length=5, eos_id=EOS, beam_size=3, length_penalty=0.0)).run(
        model, [()], start)
    assert greedy[0].tokens == [1, 3] and greedy[0].finished
    assert beam[0].tokens == [2, 3] and beam[0].finished
    assert beam[0].score == pytest.approx(np.log(0.4 * 0.9), abs=1e-4)


def test_sampling_is_reproducible_with_a_seed() -> None:
    model = TableModel(TABLE)
    options = ARDecodingOptions(max_length=5, eos_id=EOS, sampling=SamplingOptions(temperature=1.0), seed=7)
    runs = [ARDecoder(options).run(model, [()] * 8, np.full(8, 9)) for _ in range(2)]
    assert [r.tokens for r in runs[0]] == [r.tokens for r in runs[1]]
    assert len({tuple(r.tokens) for r in runs[0]}) > 1  # sampling explores


def test_min_length_and_max_length() -> None:
    model = TableModel({})  # always wants EOS
    decoder = ARDecoder(ARDecodingOptions(max_length=4, eos_id=EOS), [MinLength(EOS, 3)])
    result = decoder.run(model, [()], np.array([9]))[0]
    assert len(result.tokens) == 3 and result.finished
    capped = ARDecoder(ARDecodingOptions(max_length=2, eos_id=EOS), [MinLength(EOS, 3)]).run(
        model, [()], np.array([9]))[0]
    assert len(capped.tokens) == 2 and not capped.finished


def test_filters() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))
    assert np.isinf(filter_logits(logits, SamplingOptions(top_k=2))).sum() == 2
    assert np.isinf(filter_logits(logits, SamplingOptions(top_p=0.7))).sum() == 2
    rng = np.random.default_rng(0)
    draws = select_tokens(np.repeat(logits, 4000, axis=0), SamplingOptions(), rng)
    assert abs(np.mean(draws == 0) - 0.5) < 0.03
    with pytest.raises(ValueError):
        SamplingOptions(top_p=0)


def test_beam_of_one_equals_greedy() -> None:
    # EOS is second best after token 1: greedy continues, and so must a beam of one
    table = {(): {1: 0.55, EOS: 0.45}, (1,): {2: 0.9, EOS: 0.1}, (1, 2): {EOS: 1.0}}
    model = TableModel(table)
    greedy = ARDecoder(ARDecodingOptions(max_length=5, eos_id=EOS)).run(model, [()], np.array([9]))[0]
    beam = ARDecoder(ARDecodingOptions(max_length=5, eos_id=EOS, beam_size=1))._beam(model, [()], 9)
    assert greedy.tokens == beam.tokens == [1, 2]
