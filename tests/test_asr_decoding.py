"""NumPy ASR decoding: CTC greedy / prefix beam / alignment, CIF firing, word spans, streaming helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tokenspeech.decoding.cif import CifState, cif_finish, cif_fire, cif_step
from tokenspeech.decoding.ctc import CtcBeamOptions, ctc_align, ctc_greedy, ctc_prefix_beam_search
from tokenspeech.decoding.streaming_asr import AudioFramer, CtcStreamer, SemiARStreamer
from tokenspeech.decoding.words import word_spans
from tokenspeech.features import MelConfig, log_mel_numpy

BLANK, A, B, SPACE = 0, 1, 2, 3


def log_probs(rows: list[list[float]]) -> np.ndarray:
    probs = np.asarray(rows, dtype=np.float64)
    return np.log(np.maximum(probs / probs.sum(axis=1, keepdims=True), 1e-12))


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    lp = log_probs([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    path = ctc_greedy(lp)
    assert path.tokens == (A, A, B)
    assert path.starts == (0, 3, 4) and path.ends == (2, 4, 5)


def test_prefix_beam_beats_greedy() -> None:
    # every frame prefers blank (0.6), but "a" collects 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64 > 0.36
    lp = log_probs([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
    assert ctc_greedy(lp).tokens == ()
    best = ctc_prefix_beam_search(lp, CtcBeamOptions(beam_size=4))
    assert best[0].tokens == (A,)
    assert np.exp(best[0].score) == pytest.approx(0.64, abs=1e-6)
    assert np.exp(best[1].score) == pytest.approx(0.36, abs=1e-6)


def test_prefix_beam_keeps_repeats_apart_only_with_a_blank() -> None:
    lp = log_probs([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    assert ctc_prefix_beam_search(lp)[0].tokens == (A, A)
    lp = log_probs([[0.05, 0.9, 0.05], [0.05, 0.9, 0.05]])
    assert ctc_prefix_beam_search(lp)[0].tokens == (A,)


def test_prefix_beam_equals_greedy_on_peaky_input() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 6)) + 12 * np.eye(6)[rng.integers(0, 6, 30)]
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert ctc_prefix_beam_search(lp, CtcBeamOptions(beam_size=8))[0].tokens == ctc_greedy(lp).tokens


def test_ctc_align_spans() -> None:
    lp = log_probs([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    path = ctc_align(lp, [A, B])
    assert path.starts == (0, 3) and path.ends == (2, 4)
    assert ctc_align(lp, [A, A, A]).tokens == (A, A, A)  # needs 5 frames: a _ a _ a
    with pytest.raises(ValueError):
        ctc_align(lp[:2], [A, A])


def test_cif_fires_round_of_total_weight() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        alphas = rng.uniform(0.05, 0.95, size=int(rng.integers(1, 40)))
        out = cif_fire(alphas, rng.normal(size=(len(alphas), 4)))
        assert len(out.fires) == int(np.floor(alphas.sum() + 0.5))
        assert np.all(np.diff(out.fires) >= 0) and np.all(out.starts <= out.fires)


def test_cif_embeddings_are_weighted_sums() -> None:
    alphas = np.array([0.4, 0.8, 0.3, 0.9, 0.3])  # sum 2.7 -> 2 full tokens + tail 0.7
    hidden = np.arange(10, dtype=np.float64).reshape(5, 2)
    out = cif_fire(alphas, hidden)
    first = 0.4 * hidden[0] + 0.6 * hidden[1]
    second = 0.2 * hidden[1] + 0.3 * hidden[2] + 0.5 * hidden[3]
    tail = (0.4 * hidden[3] + 0.3 * hidden[4]) / 0.7
    np.testing.assert_allclose(out.embeddings, [first, second, tail], rtol=1e-6)
    assert out.fires.tolist() == [1, 3, 4] and out.starts.tolist() == [0, 1, 3]


def test_cif_streaming_equals_offline() -> None:
    rng = np.random.default_rng(2)
    alphas, hidden = rng.uniform(0.1, 0.9, 37), rng.normal(size=(37, 3))
    offline = cif_fire(alphas, hidden)
    state, pieces = CifState(), []
    for start in range(0, 37, 5):
        out, state = cif_step(alphas[start:start + 5], hidden[start:start + 5], state)
        pieces.append(out)
    pieces.append(cif_finish(state))
    np.testing.assert_allclose(np.concatenate([p.embeddings for p in pieces]), offline.embeddings, atol=1e-5)
    assert np.concatenate([p.fires for p in pieces]).tolist() == offline.fires.tolist()
    assert np.concatenate([p.starts for p in pieces]).tolist() == offline.starts.tolist()


def test_word_spans_split_at_spaces() -> None:
    tokens = [A, B, SPACE, SPACE, B, A, SPACE]
    spans = word_spans(tokens, [0, 2, 4, 5, 6, 8, 9], [1, 3, 5, 6, 7, 9, 10], SPACE)
    assert [(s.tokens, s.start, s.end) for s in spans] == [((A, B), 0, 3), ((B, A), 6, 9)]


class EchoBlockModel:
    """Block decoder whose logits pick ``round(first embedding value)``; state = context tokens."""

    def add_memory(self, frames, state):
        return state

    def decode_block(self, acoustic, state):
        logits = np.full((len(acoustic), 8), -10.0)
        logits[np.arange(len(acoustic)), np.clip(np.round(acoustic[:, 0]).astype(int), 0, 7)] = 0.0
        return logits

    def add_context(self, tokens, state):
        return state + list(tokens)


def test_semiar_streamer_appends_blocks_and_matches_one_block() -> None:
    rng = np.random.default_rng(3)
    alphas = rng.uniform(0.2, 0.9, 24)
    hidden = np.repeat(rng.integers(1, 7, size=(24, 1)), 2, axis=1).astype(np.float64)
    streamer = SemiARStreamer(EchoBlockModel(), [], chunk=4)
    interims = [streamer.push(hidden[i:i + 3], alphas[i:i + 3]).tokens for i in range(0, 24, 3)]
    final = streamer.finish()
    assert final.final and all(final.tokens[: len(t)] == t for t in interims)
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(interims))
    assert streamer.state == list(final.tokens)
    whole = SemiARStreamer(EchoBlockModel(), [], chunk=24)
    whole.push(hidden, alphas)
    assert whole.finish().tokens == final.tokens  # the echo model has no context effect


def test_ctc_streamer_equals_greedy() -> None:
    rng = np.random.default_rng(4)
    lp = rng.normal(size=(40, 5))
    streamer = CtcStreamer()
    for start in range(0, 40, 7):
        streamer.push(lp[start:start + 7])
    assert streamer.hypothesis().tokens == ctc_greedy(lp).tokens


def test_audio_framer_gives_offline_features() -> None:
    config = MelConfig()
    wav = np.random.default_rng(5).normal(size=16000).astype(np.float32) * 0.1
    framer, pieces = AudioFramer(config.win_length, config.hop_length), []
    for start in range(0, len(wav), 1234):
        ready = framer.push(wav[start:start + 1234])
        if ready.size:
            pieces.append(log_mel_numpy(ready, config))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), log_mel_numpy(wav, config), atol=1e-4)
