"""Masked iterative and semi-AR decoding over fake NumPy models: schedules, fixed tokens, seeds, blocks."""

from __future__ import annotations

import numpy as np
import pytest

from tokenspeech.decoding.calls import Call
from tokenspeech.decoding.masked import (
    BOTH,
    MASK,
    MaskedDecodingOptions,
    MaskedIterativeDecoder,
    cosine_schedule,
    keep_state,
    run_sided,
    sides,
)
from tokenspeech.decoding.sampling import SamplingOptions
from tokenspeech.decoding.semiar import SemiARDecoder, SemiARDecodingOptions

V = 11


class FakeMasked:
    """Logits depend on the visible tokens (so passes interact), the codebook and the position."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def logits(self, tokens, codebooks, state, unconditional=False):
        self.calls.append((tuple(codebooks), unconditional))
        if unconditional == BOTH:
            return np.stack([self._side(tokens, codebooks, False), self._side(tokens, codebooks, True)]), state
        return self._side(tokens, codebooks, unconditional), state

    @staticmethod
    def _side(tokens, codebooks, unconditional):
        batch, _, frames = tokens.shape
        visible = np.where(tokens == MASK, 0, tokens + 1).sum(axis=1)  # [B, F]
        out = np.zeros((batch, len(codebooks), frames, V), dtype=np.float32)
        for g, k in enumerate(codebooks):
            phase = (np.arange(frames)[None, :, None] * 0.7 + k + visible[:, :, None] * 0.3 + np.arange(V) * 1.3)
            out[:, g] = np.sin(phase + (1.0 if unconditional else 0.0)) * 3
        return out


@pytest.mark.parametrize("masked,steps", [(40, 8), (8, 8), (100, 1), (17, 5)])
def test_cosine_schedule_ends_at_zero_and_always_progresses(masked: int, steps: int) -> None:
    remaining = cosine_schedule(masked, steps)
    assert len(remaining) == steps and remaining[-1] == 0
    previous = np.concatenate([[masked], remaining[:-1]])
    assert np.all(remaining < previous)  # at least one token fixed per pass when masked >= steps


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_first_codebook_unmasked_in_exactly_n_steps_and_fixed_tokens_never_change(steps: int) -> None:
    decoder = MaskedIterativeDecoder(MaskedDecodingOptions(steps=steps, fine_passes=1, seed=3))
    tokens = np.full((2, 3, 30), MASK, dtype=np.int64)
    tokens[1, 0, :5] = 7  # a prompt in row 1
    history = list(decoder.iterate(FakeMasked(), None, tokens))
    first = [h for h in history if h.codebooks == (0,)]
    assert len(first) == steps
    assert not (first[-1].tokens[:, 0] == MASK).any()
    assert (first[-2].tokens[:, 0] == MASK).any() if steps > 1 else True
    previous = tokens
    for step in history:
        fixed = previous != MASK
        assert np.array_equal(step.tokens[fixed], previous[fixed])
        previous = step.tokens
    assert np.all(history[-1].tokens[1, 0, :5] == 7)
    assert not (history[-1].tokens == MASK).any()
    schedule = cosine_schedule(30, steps)
    assert [(s.tokens[0, 0] == MASK).sum() for s in first] == list(schedule)


@pytest.mark.parametrize("fine_passes,expected", [(1, [(1, 2, 3)]), (3, [(1,), (2,), (3,)]), (2, [(1, 2), (3,)])])
def test_fine_codebooks_in_the_requested_passes(fine_passes: int, expected: list[tuple[int, ...]]) -> None:
    model = FakeMasked()
    decoder = MaskedIterativeDecoder(MaskedDecodingOptions(steps=2, fine_passes=fine_passes))
    out, _ = decoder.run(model, None, np.full((1, 4, 12), MASK, dtype=np.int64))
    assert [c for c, _ in model.calls] == [(0,), (0,)] + expected
    assert not (out == MASK).any() and out.min() >= 0 and out.max() < V


def test_coarse_codebooks_are_unmasked_iteratively_before_the_one_pass_fine_codebooks() -> None:
    model = FakeMasked()
    decoder = MaskedIterativeDecoder(MaskedDecodingOptions(steps=2, coarse_steps=(3,), fine_passes=1, seed=1))
    tokens = np.full((2, 4, 20), MASK, dtype=np.int64)
    tokens[1, 1, :4] = 5  # given tokens of codebook 2 stay as they are
    history = list(decoder.iterate(model, None, tokens))
    assert [c for c, _ in model.calls] == [(0,), (0,), (1,), (1,), (1,), (2, 3)]
    second = [h for h in history if h.codebooks == (1,)]
    assert [(s.tokens[0, 1] == MASK).sum() for s in second] == list(cosine_schedule(20, 3))
    assert [(s.tokens[1, 1] == MASK).sum() for s in second] == list(cosine_schedule(16, 3))
    assert np.all(history[-1].tokens[1, 1, :4] == 5) and not (history[-1].tokens == MASK).any()
    # without coarse steps codebook 2 is filled in the one fine pass, greedily: a different answer
    plain, _ = MaskedIterativeDecoder(MaskedDecodingOptions(steps=2, seed=1)).run(FakeMasked(), None, tokens)
    assert np.array_equal(plain[:, 0], history[-1].tokens[:, 0])
    assert not np.array_equal(plain[:, 1:], history[-1].tokens[:, 1:])
    with pytest.raises(ValueError, match="coarse_steps"):
        MaskedDecodingOptions(coarse_steps=(2, 0))


def test_seed_determinism() -> None:
    tokens = np.full((1, 2, 25), MASK, dtype=np.int64)

    def run(seed: int) -> np.ndarray:
        options = MaskedDecodingOptions(steps=5, sampling=SamplingOptions(temperature=1.5), seed=seed)
        return MaskedIterativeDecoder(options).run(FakeMasked(), None, tokens)[0]

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_a_guided_pass_is_one_call_for_both_sides() -> None:
    model = FakeMasked()
    options = MaskedDecodingOptions(steps=3, guidance=1.5)
    MaskedIterativeDecoder(options).run(model, None, np.full((1, 2, 9), MASK, dtype=np.int64))
    assert [u for _, u in model.calls] == [BOTH] * 4


class OneSidedOnly(FakeMasked):
    """Refuses BOTH: the decoding before guided passes became one call, as the reference."""

    def logits(self, tokens, codebooks, state, unconditional=False):
        assert unconditional != BOTH
        return super().logits(tokens, codebooks, state, unconditional)


def test_guided_tokens_equal_two_one_sided_passes_mixed() -> None:
    """``cond + g * (cond - uncond)`` from one BOTH call equals the same from two one-sided calls."""
    options = MaskedDecodingOptions(steps=3, guidance=1.5, seed=4)
    tokens = np.full((2, 3, 11), MASK, dtype=np.int64)
    one_call, _ = MaskedIterativeDecoder(options).run(FakeMasked(), None, tokens)

    class SplitBoth(FakeMasked):
        def logits(self, tokens_, codebooks, state, unconditional=False):
            if unconditional == BOTH:  # the backends' way: one-sided calls in one batch
                return run_sided([Call(self.logits, (tokens_, codebooks, state, BOTH))], 3,
                                 lambda flat: [OneSidedOnly().logits(*c.args) for c in flat], keep_state)[0]
            return super().logits(tokens_, codebooks, state, unconditional)

    assert np.array_equal(one_call, MaskedIterativeDecoder(options).run(SplitBoth(), None, tokens)[0])
    assert sides(BOTH) == (False, True) and sides(True) == (True,) and sides(False) == (False,)
    with pytest.raises(ValueError, match="unconditional"):
        sides("uncond")


@pytest.mark.parametrize("guidance,fine_guidance,expected", [
    (0.0, 2.0, [False] * 3 + [BOTH]),  # only the fine pass guided
    (1.5, 0.0, [BOTH] * 3 + [False]),  # only the first codebook's passes guided
    (1.5, None, [BOTH] * 4),  # None: the fine pass follows ``guidance``
])
def test_fine_guidance_sets_the_fine_pass_apart(guidance: float, fine_guidance: float | None,
                                                expected: list[bool]) -> None:
    model = FakeMasked()
    options = MaskedDecodingOptions(steps=3, guidance=guidance, fine_guidance=fine_guidance)
    tokens, _ = MaskedIterativeDecoder(options).run(model, None, np.full((1, 3, 9), MASK, dtype=np.int64))
    assert [u for _, u in model.calls] == expected and not (tokens == MASK).any()
    assert options.uses_guidance


def test_fine_guidance_changes_only_the_fine_codebooks() -> None:
    start = np.full((1, 3, 9), MASK, dtype=np.int64)

    def run(fine_guidance: float) -> np.ndarray:
        options = MaskedDecodingOptions(steps=3, fine_guidance=fine_guidance, seed=5)
        return MaskedIterativeDecoder(options).run(FakeMasked(), None, start)[0]

    plain, guided = run(0.0), run(4.0)
    assert np.array_equal(plain[:, 0], guided[:, 0])  # codebook 1 is decoded without guidance either way
    assert not np.array_equal(plain[:, 1:], guided[:, 1:])
    with pytest.raises(ValueError, match="fine_guidance"):
        MaskedDecodingOptions(fine_guidance=-1.0)


class FakeBlocks:
    """A block model whose logits depend on the committed context, so order mistakes show."""

    def __init__(self) -> None:
        self.inner = FakeMasked()
        self.passes = 0

    def block_logits(self, tokens, start, codebooks, state, unconditional=False):
        self.passes += 1
        logits, _ = self.inner.logits(tokens, codebooks, None, unconditional)
        context = float(sum(int(b.sum()) for b in state)) if state else 0.0
        return logits + np.sin(context + start) * 2, state

    def commit(self, tokens, start, state):
        assert not (tokens == MASK).any()
        assert sum(b.shape[2] for b in state) == start  # blocks arrive in order
        return state + [tokens]


def test_semiar_blocks_cover_the_frames_and_stream_equals_run() -> None:
    options = SemiARDecodingOptions(block_frames=4, masked=MaskedDecodingOptions(steps=2, seed=5))
    decoder = SemiARDecoder(options)
    assert decoder.blocks(10) == [(0, 4), (4, 4), (8, 2)]
    whole = decoder.run(FakeBlocks(), [], 1, 3, 10)
    assert whole.shape == (1, 3, 10) and not (whole == MASK).any()
    model = FakeBlocks()
    stream = decoder.iterate(model, [], 1, 3, 10)
    first = next(stream)
    passes_for_first = model.passes
    rest = list(stream)
    assert first.shape == (1, 3, 4) and passes_for_first < model.passes  # yielded before the rest was computed
    assert np.array_equal(np.concatenate([first] + rest, axis=2), whole)
