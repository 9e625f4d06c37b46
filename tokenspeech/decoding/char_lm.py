"""A character n-gram language model for CTC prefix beam search. NumPy only (the torch-free runtime loads it).

Interpolated Witten-Bell estimates over the ASR model's character ids::

    P(c | h) = (C(h c) + N(h) P(c | h')) / (C(h) + N(h))

where ``h'`` is ``h`` without its oldest character, ``C`` counts n-grams in
the training text, ``N(h)`` is the number of distinct characters seen after
``h``, and the shortest history backs off to a uniform distribution. Each
sentence is padded with ``order - 1`` boundary ids in front and ends with one
(the ``<eos>`` id of the vocabulary), so the model also scores how sentences
start and end.

Storage: for each history length ``k`` (0 .. order - 1) the seen histories,
packed base-``V`` into int64 and sorted, with ``C(h)`` and ``N(h)``; and the
n-grams after each history (character id and count) in history order.
Lookups are binary searches, and the distribution after a history is cached.

Why our own: the libraries that fuse an n-gram LM into CTC decoding
(pyctcdecode, torchaudio's flashlight decoder) take word-level KenLM models,
whose estimator ``lmplz`` is a C++ tool pip does not install, and need a
lexicon or word-boundary handling our character CTC does not have. On the
shipped ASR a 6-gram over the training transcripts cut test WER from 71 % to
40 % (60 test utterances); see docs/asr.md.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
KIND = "char_ngram_lm"
_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class _Table:
    """Histories of one length ``k`` and the characters seen after each."""

    keys: np.ndarray  # [H] int64, sorted: histories packed base V
    totals: np.ndarray  # [H] int64: C(h)
    types: np.ndarray  # [H] int64: N(h)
    offsets: np.ndarray  # [H + 1] int64 into chars / counts
    chars: np.ndarray  # [G] int64
    counts: np.ndarray  # [G] int64


def remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """``cache[key] = value``, emptying the cache first when it holds ``_CACHE_LIMIT`` entries; returns ``value``."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def sentence_log_prob(lm: Any, ids: Sequence[int]) -> float:
    """log P of a whole sentence under a character-level ``lm`` (``history``/``log_probs``): its characters,
    then the boundary."""
    total, previous = 0.0, []
    for token in list(ids) + [lm.boundary]:
        total += float(lm.log_probs(lm.history(previous))[token])
        previous.append(int(token))
    return total


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``arrays`` into the compressed .npz ``path``, written whole or not at all (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def pack_key(ids: Sequence[int], base: int) -> int:
    """A history of ids as one int64 key, base ``base``."""
    key = 0
    for token in ids:
        key = key * base + int(token)
    return key


class CharNgramLM:
    """``log_probs(history)``: log P of every character id after ``history`` (see the module docstring)."""

    kind = KIND

    def __init__(self, order: int, vocab_size: int, boundary: int, tables: list[_Table],
                 info: dict | None = None) -> None:
        if order < 1 or len(tables) != order:
            raise ValueError("order must be >= 1 with one table per history length")
        if vocab_size ** max(order - 1, 1) >= 2 ** 62:
            raise ValueError("histories do not fit an int64 key; use a lower order")
        self.order, self.vocab_size, self.boundary = order, vocab_size, boundary
        self.tables = tables
        self.info = dict(info or {})
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, sentences: Iterable[Sequence[int]], order: int, vocab_size: int, boundary: int,
              info: dict | None = None) -> CharNgramLM:
        """Count every n-gram (n <= ``order``) of ``sentences`` (character ids, boundary excluded)."""
        if order < 1:
            raise ValueError("order must be >= 1")
        pad = order - 1
        pieces, targets = [], []
        for sentence in sentences:
            ids = [boundary] * pad + [int(t) for t in sentence] + [boundary]
            if any(not 0 <= t < vocab_size for t in ids):
                raise ValueError("a character id is outside the vocabulary")
            pieces.append(np.asarray(ids, dtype=np.int64))
            targets.append(np.arange(pad, len(ids)))  # positions predicted: every character and the end
        if not pieces:
            raise ValueError("no training sentences")
        starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
        stream = np.concatenate(pieces)
        positions = np.concatenate([t + s for t, s in zip(targets, starts)])
        tables = []
        for k in range(order):  # n-grams of k history characters + the predicted one
            keys = np.zeros(positions.shape, dtype=np.int64)
            for offset in range(k, -1, -1):
                keys = keys * vocab_size + stream[positions - offset]
            grams, counts = np.unique(keys, return_counts=True)
            histories, first, types = np.unique(grams // vocab_size, return_index=True, return_counts=True)
            totals = np.add.reduceat(counts, first)
            offsets = np.append(first, len(grams)).astype(np.int64)
            tables.append(_Table(histories.astype(np.int64), totals.astype(np.int64), types.astype(np.int64),
                                 offsets, (grams % vocab_size).astype(np.int64), counts.astype(np.int64)))
        meta = {"sentences": len(pieces), "characters": int(sum(len(p) - pad for p in pieces)), **(info or {})}
        return cls(order, vocab_size, boundary, tables, meta)

    # ------------------------------------------------------------------ scoring

    def start(self) -> tuple[int, ...]:
        """The history of a sentence's first character."""
        return (self.boundary,) * (self.order - 1)

    def history(self, previous: Sequence[int]) -> tuple[int, ...]:
        """The history after ``previous`` characters of a sentence (its last ``order - 1``, boundary-padded)."""
        if self.order == 1:
            return ()
        full = self.start() + tuple(int(t) for t in previous[-(self.order - 1):])
        return full[-(self.order - 1):]

    def log_probs(self, history: tuple[int, ...]) -> np.ndarray:
        """log P ``[V]`` float64 of each character id (and the boundary: the sentence ends) after ``history``."""
        cached = self._cache.get(history)
        if cached is not None:
            return cached
        base = self.vocab_size
        probs = np.full(base, 1.0 / base)
        for k in range(self.order):
            if k > len(history):
                break
            table = self.tables[k]
            key = pack_key(history[len(history) - k:], base) if k else 0
            index = int(np.searchsorted(table.keys, key))
            if index == len(table.keys) or table.keys[index] != key:
                break  # an unseen history: the longer ones are unseen too
            seen = np.zeros(base)
            start, stop = table.offsets[index], table.offsets[index + 1]
            seen[table.chars[start:stop]] = table.counts[start:stop]
            types = float(table.types[index])
            probs = (seen + types * probs) / (float(table.totals[index]) + types)
        return remember(self._cache, history, np.log(probs))

    def sentence_log_prob(self, ids: Sequence[int]) -> float:
        """log P of a whole sentence (its characters, then the boundary)."""
        return sentence_log_prob(self, ids)

    # ------------------------------------------------------------------ files

    def arrays(self) -> dict[str, np.ndarray]:
        """The model as named arrays (``header`` is its JSON header as bytes): what :meth:`save` writes."""
        arrays = {"header": np.frombuffer(json.dumps(
            {"format_version": FORMAT_VERSION, "kind": KIND, "order": self.order,
             "vocab_size": self.vocab_size, "boundary": self.boundary, "info": self.info}).encode(), dtype=np.uint8)}
        for k, table in enumerate(self.tables):
            arrays.update({f"{name}_{k}": getattr(table, name).astype(dtype) for name, dtype in (
                ("keys", np.int64), ("totals", np.int64), ("types", np.int32), ("offsets", np.int64),
                ("chars", np.uint8), ("counts", np.int32))})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> CharNgramLM:
        """The model of :meth:`arrays`; ``ValueError`` (or ``KeyError``) when they are not one."""
        header = json.loads(bytes(arrays["header"]).decode())
        if header.get("kind") != KIND or header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a tokenspeech character LM (format version {header.get('format_version')}, "
                             f"kind {header.get('kind')})")
        tables = [_Table(*(np.asarray(arrays[f"{name}_{k}"]).astype(np.int64) for name in
                           ("keys", "totals", "types", "offsets", "chars", "counts")))
                  for k in range(int(header["order"]))]
        return cls(int(header["order"]), int(header["vocab_size"]), int(header["boundary"]), tables,
                   header.get("info"))

    def save(self, path: str | Path) -> Path:
        """``path`` (.npz, compressed) with the tables and a JSON header."""
        return save_arrays(path, self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> CharNgramLM:
        """A model written by :meth:`save`; ``ValueError`` for anything else."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_arrays(data)
        except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: cannot read the character LM ({error})") from error
