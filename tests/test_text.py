"""Text front-end: normalisation, phonemes, vocabularies."""

from __future__ import annotations

import pytest

from tokenspeech.errors import ConfigError, TextError
from tokenspeech.text.g2p import EspeakPhonemizer
from tokenspeech.text.normalize import normalize_text, transcript_form
from tokenspeech.text.vocab import Vocabulary, character_vocabulary, phoneme_vocabulary


@pytest.mark.parametrize(
    "written, spoken",
    [
        ("I have 3 cats.", "I have three cats."),
        ("It cost $3.50.", "It cost three dollars and fifty cents."),
        ("It cost $1.", "It cost one dollar."),
        ("A £20 note.", "A twenty pounds note."),
        ("They spent $2 billion.", "They spent two billion dollars."),
        ("On May 1st, 1990.", "On May first, nineteen ninety."),
        ("The 21st century.", "The twenty first century."),
        ("In 1990, I left.", "In nineteen ninety, I left."),
        ("In 2024 we met.", "In twenty twenty four we met."),
        ("In 2005 we met.", "In two thousand and five we met."),
        ("The 1960s were loud.", "The nineteen sixties were loud."),
        ("Population: 1,200,000.", "Population: one million two hundred thousand."),
        ("Pi is 3.14.", "Pi is three point one four."),
        ("Up 25% today.", "Up twenty five percent today."),
        ("Meet at 10:30.", "Meet at ten thirty."),
        ("Meet at 7:00.", "Meet at seven o'clock."),
        ("Dr. Smith met Mr. Jones.", "Doctor Smith met Mister Jones."),
        ("Salt, pepper, etc.", "Salt, pepper, et cetera."),
        ("Tom & Jerry.", "Tom and Jerry."),
        ("\u201cQuoted\u201d \u2018text\u2019 \u2014 here\u2026", '"Quoted" \'text\', here.'),
        ("well-known facts", "well known facts"),
    ],
)
def test_normalize_text(written: str, spoken: str) -> None:
    assert normalize_text(written) == spoken


def test_normalize_leaves_no_digits() -> None:
    text = normalize_text("Room 101, floor 3rd, 42 items at $0.99 in 1066 and 2019's 7.5%.")
    assert not any(ch.isdigit() for ch in text)


def test_transcript_form() -> None:
    assert transcript_form("Well, it's Doctor Smith's 'pet'!") == "well it's doctor smith's pet"
    assert transcript_form("  Twenty-one  ") == "twenty one"
    assert transcript_form("...") == ""


def test_phonemize_keeps_punctuation_as_tokens() -> None:
    phonemes = EspeakPhonemizer().phonemize("Hello, world. Are you there?")
    assert phonemes.count(",") == 1 and phonemes.count(".") == 1 and phonemes.endswith("?")
    assert "h" in phonemes and "w" in phonemes


def test_phonemize_is_deterministic_and_voice_specific() -> None:
    us = EspeakPhonemizer("en-us").phonemize("tomato")
    assert us == EspeakPhonemizer("en-us").phonemize("tomato")
    assert EspeakPhonemizer("en-gb").phonemize("tomato") != us


@pytest.mark.parametrize("text", ["", "   ", "...", "?!"])
def test_phonemize_rejects_unspeakable_text(text: str) -> None:
    with pytest.raises(TextError):
        EspeakPhonemizer().phonemize(text)


def test_unknown_espeak_voice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no voice named"):
        EspeakPhonemizer("xx-not-a-voice").phonemize("hello")
    # the phonemizer still works for a good voice afterwards
    assert EspeakPhonemizer("en-us").phonemize("hello")


def test_phoneme_vocabulary_round_trip_and_unknowns() -> None:
    vocab = phoneme_vocabulary(["həlˈoʊ", "wˈɜːld."])
    ids = vocab.encode("həlˈoʊ wˈɜːld.")
    assert vocab.unk_id in ids  # the space was never seen
    assert vocab.decode(vocab.encode("həlˈoʊ")) == "həlˈoʊ"
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_character_vocabulary_covers_transcripts() -> None:
    vocab = character_vocabulary()
    text = transcript_form("Don't panic: it's 42!")
    assert vocab.unk_id not in vocab.encode(text)
    assert vocab.decode(vocab.encode(text)) == text


def test_vocabulary_rejects_bad_symbol_lists() -> None:
    with pytest.raises(ValueError):
        Vocabulary(("a", "b"))
    with pytest.raises(ValueError):
        Vocabulary(("<pad>", "<unk>", "<bos>", "<eos>", "a", "a"))
