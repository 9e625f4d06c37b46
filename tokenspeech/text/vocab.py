"""Symbol vocabularies: phonemes for TTS inputs, characters for ASR outputs.

A vocabulary is saved with every model (in its JSON card) and rebuilt from
there, so a model never depends on the vocabulary of the code that loads it.
Unknown symbols map to ``<unk>``; encoding never fails on odd input.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tokenspeech.errors import ConfigError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered symbol list; ids 0..3 are ``<pad> <unk> <bos> <eos>``."""

    symbols: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.symbols[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("a vocabulary must not repeat a symbol")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.symbols)})

    @classmethod
    def from_symbols(cls, symbols: Iterable[str]) -> "Vocabulary":
        """Specials first, then each new symbol once, in sorted order."""
        rest = sorted(set(symbols) - set(SPECIALS))
        return cls(SPECIALS + tuple(rest))

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, symbols: Iterable[str]) -> list[int]:
        """Symbols (e.g. the characters of a string) -> ids; unknown -> ``<unk>``."""
        return [self._index.get(s, self.unk_id) for s in symbols]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> string, dropping specials."""
        return "".join(self.symbols[i] for i in ids if i >= len(SPECIALS) and i < len(self.symbols))

    def to_json(self) -> list[str]:
        return list(self.symbols)

    @classmethod
    def from_json(cls, symbols: Sequence[str]) -> "Vocabulary":
        return cls(tuple(symbols))


def phoneme_vocabulary(phoneme_strings: Iterable[str]) -> Vocabulary:
    """Every character seen in ``phoneme_strings`` (IPA, stress marks, space, punctuation)."""
    seen: set[str] = set()
    for text in phoneme_strings:
        seen.update(text)
    return Vocabulary.from_symbols(seen)


def continued_phonemes(model: Vocabulary, seen: Vocabulary, model_name: object) -> Vocabulary:
    """``model``'s phoneme table for a run that continues ``model_name`` on data using the symbols ``seen``.

    Ids are rows of the model's embedding, so the model keeps its own table;
    symbols it knows but the new data never uses do no harm. A symbol it
    does not know raises :class:`ConfigError` before any training.
    """
    unknown = sorted(set(seen.to_json()) - set(model.to_json()))
    if unknown:
        raise ConfigError(f"the corpus uses phoneme symbols {unknown} that {model_name} was not trained "
                          "with; train a new model instead of --init-from")
    return model


def character_vocabulary() -> Vocabulary:
    """ASR output symbols: space, apostrophe and a-z (what ``transcript_form`` produces)."""
    return Vocabulary(SPECIALS + (" ", "'") + tuple(string.ascii_lowercase))
