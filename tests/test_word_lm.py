"""The word n-gram LM read character by character: its probabilities, files, loading, and fusion into CTC search."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tokenspeech.asr.lm import load_lm, read_lm
from tokenspeech.decoding.char_lm import CharNgramLM
from tokenspeech.decoding.ctc import CtcBeamOptions, ctc_greedy, ctc_prefix_beam_search
from tokenspeech.decoding.word_lm import WordLexiconLM
from tokenspeech.errors import ConfigError
from tokenspeech.text.vocab import Vocabulary, character_vocabulary

VOCAB = character_vocabulary()
SPACE = VOCAB.encode(" ")[0]
TEXTS = ["the cat sat", "the cat ran", "a cat sat on the mat", "the dog sat", "the cats ate"] * 3


def char_lm() -> CharNgramLM:
    return CharNgramLM.train((VOCAB.encode(t) for t in TEXTS), 3, len(VOCAB.symbols), VOCAB.eos_id,
                             {"vocabulary": list(VOCAB.symbols)})


def word_lm(mix: float = 0.9, order: int = 3) -> WordLexiconLM:
    return WordLexiconLM.train((VOCAB.encode(t) for t in TEXTS), char_lm(), SPACE, order=order, mix=mix,
                               info={"vocabulary": list(VOCAB.symbols)})


def probs_after(lm: WordLexiconLM | CharNgramLM, text: str) -> np.ndarray:
    return np.exp(lm.log_probs(lm.history(VOCAB.encode(text))))


def word_prob(lm: WordLexiconLM, word: str, before: tuple[str, ...]) -> float:
    """P(word | the words before) of the word n-gram, as the mass of a one-word range."""
    ids = tuple(lm.lexicon.index(tuple(VOCAB.encode(w))) if w else lm.start_id for w in before)
    index = lm.lexicon.index(tuple(VOCAB.encode(word))) if word else lm.end
    return float(lm._range_probs(ids, np.array([index]), np.array([index + 1]))[0])


def test_every_distribution_sums_to_one() -> None:
    lm = word_lm()
    for previous in ("", "the ", "the c", "the ca", "the cat", "zq", "the zq", "a cat sat on the m"):
        probs = probs_after(lm, previous)
        assert probs.shape == (len(VOCAB.symbols),) and abs(probs.sum() - 1.0) < 1e-9 and (probs >= 0).all()


def test_the_word_part_is_the_word_model_summed_over_the_lexicon() -> None:
    """After "the ca", P_word(t) = P(cat | the) + P(cats | the) over the words starting with "ca", and the word
    "cat" then ends (space or sentence end) with P(cat) / (P(cat) + P(cats)); the char LM takes 1 - mix."""
    lm, chars = word_lm(mix=0.9), char_lm()
    before = ("", "the")
    cat, cats = word_prob(lm, "cat", before), word_prob(lm, "cats", before)
    starts_ca = sum(word_prob(lm, w, before) for w in ("cat", "cats"))
    expected_t = 0.9 * (cat + cats) / starts_ca + 0.1 * probs_after(chars, "the ca")[VOCAB.encode("t")[0]]
    assert probs_after(lm, "the ca")[VOCAB.encode("t")[0]] == pytest.approx(expected_t)
    after_cat = probs_after(lm, "the cat")
    ends = word_prob(lm, "", ("the", "cat"))
    char_after = probs_after(chars, "the cat")
    assert after_cat[SPACE] == pytest.approx(0.9 * cat / (cat + cats) * (1 - ends) + 0.1 * char_after[SPACE])
    assert after_cat[VOCAB.eos_id] == pytest.approx(0.9 * cat / (cat + cats) * ends + 0.1 * char_after[VOCAB.eos_id])


def test_history_holds_the_last_words_and_the_partial_one() -> None:
    lm = word_lm(order=3)
    the, cat = (lm.lexicon.index(tuple(VOCAB.encode(w))) for w in ("the", "cat"))
    assert lm.history(VOCAB.encode("a the cat s"))[:2] == (the, cat)
    assert lm.history(VOCAB.encode("the zzz c"))[:2] == (the, lm.unknown)  # outside the lexicon: <unk>
    assert lm.history(VOCAB.encode("ca"))[:2] == (lm.start_id, lm.start_id)
    assert lm.history(VOCAB.encode("the ca")) != lm.history(VOCAB.encode("the cb"))


def test_a_word_outside_the_lexicon_costs_about_log_one_minus_mix_once() -> None:
    lm, chars = word_lm(mix=0.9), char_lm()
    leaving = probs_after(lm, "the d")[VOCAB.encode("a")[0]]  # "da..." starts no lexicon word
    assert leaving == pytest.approx(0.1 * probs_after(chars, "the d")[VOCAB.encode("a")[0]])
    np.testing.assert_allclose(probs_after(lm, "the da"), probs_after(chars, "the da"))  # the char LM alone after
    in_lexicon = lm.sentence_log_prob(VOCAB.encode("the cat sat"))
    assert in_lexicon > chars.sentence_log_prob(VOCAB.encode("the cat sat"))
    assert math.isfinite(lm.sentence_log_prob(VOCAB.encode("the dax sat")))
    assert lm.sentence_log_prob(VOCAB.encode("the cat sat")) > lm.sentence_log_prob(VOCAB.encode("the cta sat"))


def test_save_load_round_trip_and_read_lm_tells_the_kinds_apart(tmp_path: Path) -> None:
    lm = word_lm()
    path = lm.save(tmp_path / "word.npz")
    again = read_lm(path)
    assert isinstance(again, WordLexiconLM) and again.mix == lm.mix and again.lexicon == lm.lexicon
    for previous in ("", "the ", "the ca", "the cat sat", "zq"):
        history = lm.history(VOCAB.encode(previous))
        np.testing.assert_array_equal(again.log_probs(history), lm.log_probs(history))
    assert isinstance(read_lm(char_lm().save(tmp_path / "char.npz")), CharNgramLM)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read the language model"):
        read_lm(tmp_path / "junk.npz")
    assert load_lm(path, VOCAB) is not None
    with pytest.raises(ConfigError, match="another character vocabulary"):
        load_lm(path, Vocabulary.from_symbols("abc"))


def test_beam_search_with_the_word_lm_spells_a_lexicon_word() -> None:
    """Frames that slightly prefer "the kat sat": the lexicon's "cat" wins with the word LM, not without."""
    lm = word_lm(mix=0.9)
    text = "the kat sat"
    ids = VOCAB.encode(text)
    k, c = VOCAB.encode("k")[0], VOCAB.encode("c")[0]
    frames = np.full((2 * len(ids), len(VOCAB.symbols)), 1e-4)
    for i, token in enumerate(ids):
        frames[2 * i, token] = 1.0
        frames[2 * i + 1, 0] = 1.0  # a blank between characters
        if token == k:
            frames[2 * i, c] = 0.8  # "c" nearly as likely as "k"
    log_probs = np.log(frames / frames.sum(axis=1, keepdims=True))
    assert VOCAB.decode(ctc_greedy(log_probs).tokens) == text
    options = CtcBeamOptions(beam_size=8, lm_weight=1.0, length_bonus=1.0)
    assert VOCAB.decode(ctc_prefix_beam_search(log_probs, options)[0].tokens) == text
    assert VOCAB.decode(ctc_prefix_beam_search(log_probs, options, lm)[0].tokens) == "the cat sat"


def test_the_recogniser_takes_the_search_settings_measured_for_its_kind_of_lm() -> None:
    from tiny_models import tiny_asr_bundle

    from tokenspeech.asr.engine import LM_SETTINGS
    from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer

    bundle = tiny_asr_bundle()
    for lm in (char_lm(), word_lm()):
        recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="ctc"), lm)
        options = recognizer.beam_options(8)
        assert (options.lm_weight, options.length_bonus) == LM_SETTINGS[lm.kind]["ctc"]
    assert LM_SETTINGS[char_lm().kind] != LM_SETTINGS[word_lm().kind]
    chosen = TorchRecognizer(bundle, RecognizerOptions(decoder="ctc", lm_weight=0.3, length_bonus=0.2), word_lm())
    assert (chosen.beam_options(8).lm_weight, chosen.beam_options(8).length_bonus) == (0.3, 0.2)
