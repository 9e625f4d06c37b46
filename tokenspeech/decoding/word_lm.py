"""A word n-gram LM over a lexicon, read one character at a time. NumPy only (the torch-free runtime loads it).

It answers the same question as :class:`tokenspeech.decoding.char_lm.CharNgramLM`
(log P of each next character after a character prefix), so every search
that fuses the character LM (CTC prefix beam, Paraformer positions, joint
CTC/attention) takes it unchanged. Inside a word it sums the word model over
the lexicon::

    P_word(c | u v, p) = sum_{w in lexicon, w starts with p c} P(w | u v) / sum_{w starts with p} P(w | u v)

where ``u v`` are the last two finished words and ``p`` the letters of the
current word so far; a space (or the end of the sentence) after ``p`` has
the probability that the word is exactly ``p``, split by P(end | v p). The
word model is an interpolated Witten-Bell n-gram like the character one, over
words numbered in lexicon (sorted) order, so the words that start with ``p``
are one range of ids and the sums above are differences of cumulative
counts. The result is mixed with the character LM::

    P(c) = mix * P_word(c) + (1 - mix) * P_char(c)     while p starts some lexicon word,
    P(c) = P_char(c)                                   once it does not,

so a word outside the lexicon stays possible at a cost of ``log(1 - mix)``
where it leaves the lexicon, and becomes ``<unk>`` in the word history.

Why: the character 6-gram sees about one word back and cannot tell a word
from a plausible spelling; a weak acoustic model spells what it hears. Why
our own: pyctcdecode and torchaudio's flashlight decoder take KenLM models,
whose estimator (``lmplz``) pip does not install, and handle only CTC;
this one also serves the attention and Paraformer searches.
"""

from __future__ import annotations

import bisect
import json
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenspeech.decoding.char_lm import CharNgramLM, pack_key, remember, save_arrays, sentence_log_prob

FORMAT_VERSION = 1
KIND = "word_lexicon_lm"
# The word model's share while the word so far is in the lexicon. Shipped ASR, 150 dev clips, ctc:
# 0.5 / 0.8 / 0.95 / 0.99 -> 20.9 / 20.6 / 19.8 / 20.1 % WER (char 6-gram alone 23.4 %; docs/asr.md, session 17).
DEFAULT_MIX = 0.95
_SEPARATOR = -1  # between the parts of a history tuple


@dataclass(frozen=True)
class _WordTable:
    """Word histories of one length and the words seen after each (ascending ids within a history)."""

    keys: np.ndarray  # [H] int64, sorted: histories packed base (W + 3)
    totals: np.ndarray  # [H] C(h)
    types: np.ndarray  # [H] N(h)
    offsets: np.ndarray  # [H + 1] into words / counts
    words: np.ndarray  # [G] word ids
    counts: np.ndarray  # [G]

    def cumulative(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])


@dataclass(frozen=True)
class _Node:
    """The lexicon words that start with a prefix, as id ranges ``[lo, hi)``: one per next letter, then all
    of them, then the prefix as a whole word (an empty range if it is none), with the ranges' probabilities
    at the unigram level, which are the same after every word history."""

    word: int  # the prefix's own id, or -1
    chars: np.ndarray  # [C] next letters
    los: np.ndarray  # [C + 2]
    his: np.ndarray  # [C + 2]
    unigram: np.ndarray  # [C + 2]


class WordLexiconLM:
    """``log_probs(history)`` over the character ids of the ASR vocabulary, from a word n-gram and a lexicon."""

    kind = KIND

    def __init__(self, lexicon: Sequence[tuple[int, ...]], order: int, tables: list[_WordTable],
                 char_lm: CharNgramLM, space: int, mix: float = DEFAULT_MIX, info: dict | None = None) -> None:
        if list(lexicon) != sorted(set(lexicon)):
            raise ValueError("the lexicon must be sorted and without repeats")
        if order < 1 or len(tables) != order:
            raise ValueError("order must be >= 1 with one table per history length")
        if not 0 <= mix < 1:
            raise ValueError("mix must be in [0, 1)")
        self.lexicon = [tuple(int(c) for c in word) for word in lexicon]
        self.order, self.tables, self.char_lm, self.space, self.mix = order, tables, char_lm, space, mix
        self.info = dict(info or {})
        self.vocab_size, self.boundary = char_lm.vocab_size, char_lm.boundary
        words = len(self.lexicon)
        self.end, self.unknown, self.start_id = words, words + 1, words + 2  # ids after the lexicon's
        self._base = words + 3
        if self._base ** max(order - 1, 1) >= 2 ** 62:
            raise ValueError("word histories do not fit an int64 key; use a lower order")
        self._index = {word: i for i, word in enumerate(self.lexicon)}
        self._cumulative = [table.cumulative() for table in tables]
        self._nodes: dict[tuple[int, ...], _Node | None] = {}
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._ends: dict[tuple[int, ...], float] = {}

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, sentences: Iterable[Sequence[int]], char_lm: CharNgramLM, space: int, order: int = 3,
              min_count: int = 1, mix: float = DEFAULT_MIX, info: dict | None = None) -> WordLexiconLM:
        """Count the words of ``sentences`` (character ids, words split at ``space``); the lexicon is every
        word seen ``min_count`` times or more, the others count as ``<unk>``."""
        split = [[tuple(word) for word in _words(sentence, space)] for sentence in sentences]
        if not split:
            raise ValueError("no training sentences")
        frequency = Counter(word for sentence in split for word in sentence)
        lexicon = sorted(word for word, count in frequency.items() if count >= min_count and word)
        index = {word: i for i, word in enumerate(lexicon)}
        end, unknown, start = len(lexicon), len(lexicon) + 1, len(lexicon) + 2
        base = len(lexicon) + 3
        if base ** order >= 2 ** 62:
            raise ValueError(f"{order}-grams of a {len(lexicon)}-word lexicon do not fit an int64 key; "
                             "use a lower order or a higher min_count")
        pad = order - 1
        streams, positions, offset = [], [], 0
        for sentence in split:
            ids = [start] * pad + [index.get(word, unknown) for word in sentence] + [end]
            streams.append(np.asarray(ids, dtype=np.int64))
            positions.append(np.arange(pad, len(ids)) + offset)
            offset += len(ids)
        stream, targets = np.concatenate(streams), np.concatenate(positions)
        tables = []
        for k in range(order):
            keys = np.zeros(targets.shape, dtype=np.int64)
            for back in range(k, -1, -1):
                keys = keys * base + stream[targets - back]
            grams, counts = np.unique(keys, return_counts=True)
            histories, first, types = np.unique(grams // base, return_index=True, return_counts=True)
            tables.append(_WordTable(histories, np.add.reduceat(counts, first), types,
                                     np.append(first, len(grams)).astype(np.int64), grams % base, counts))
        meta = {"sentences": len(split), "words": int(sum(len(s) for s in split)), "lexicon": len(lexicon),
                **(info or {})}
        return cls(lexicon, order, tables, char_lm, space, mix, meta)

    # ------------------------------------------------------------------ scoring

    def history(self, previous: Sequence[int]) -> tuple[int, ...]:
        """The last ``order - 1`` finished words (ids), the current word's letters, and the character LM's history."""
        words, end = [], len(previous)
        cut = end
        while cut > 0 and previous[cut - 1] != self.space:
            cut -= 1
        partial = tuple(int(t) for t in previous[cut:end])
        while cut > 0 and len(words) < self.order - 1:
            stop = cut - 1  # the space
            cut = stop
            while cut > 0 and previous[cut - 1] != self.space:
                cut -= 1
            words.append(self._index.get(tuple(int(t) for t in previous[cut:stop]), self.unknown))
        words += [self.start_id] * (self.order - 1 - len(words))
        return (*reversed(words), _SEPARATOR, *partial, _SEPARATOR, *self.char_lm.history(previous))

    def log_probs(self, history: tuple[int, ...]) -> np.ndarray:
        """log P ``[V]`` float64 of each character id (and the boundary: the sentence ends) after ``history``."""
        cached = self._cache.get(history)
        if cached is not None:
            return cached
        words = history[:self.order - 1]
        rest = history[self.order:]
        split = rest.index(_SEPARATOR)
        partial, char_history = rest[:split], rest[split + 1:]
        probs = np.exp(self.char_lm.log_probs(char_history))
        node = self._node(partial)
        if node is not None and self.mix > 0:
            probs = self.mix * self._word_char_probs(words, node) + (1 - self.mix) * probs
        with np.errstate(divide="ignore"):
            return remember(self._cache, history, np.log(probs))

    def _word_char_probs(self, words: tuple[int, ...], node: _Node) -> np.ndarray:
        """P_word over the character ids: each next letter, and the space / boundary that end the word."""
        masses = self._range_probs(words, node.los, node.his, node.unigram)
        letters = len(node.chars)
        total, whole = masses[letters], masses[letters + 1] if node.word >= 0 else 0.0
        probs = np.zeros(self.vocab_size)
        if total <= 0:
            return probs
        probs[node.chars] = masses[:letters] / total
        if whole > 0:
            ends = self._ends_after((*words[1:], node.word) if self.order > 1 else ())
            probs[self.space] += whole / total * (1 - ends)
            probs[self.boundary] += whole / total * ends
        return probs

    def _ends_after(self, words: tuple[int, ...]) -> float:
        """P(the sentence ends | ``words``), cached."""
        cached = self._ends.get(words)
        if cached is None:
            cached = remember(self._ends, words,
                              float(self._range_probs(words, np.array([self.end]), np.array([self.end + 1]))[0]))
        return cached

    def _range_probs(self, words: tuple[int, ...], los: np.ndarray, his: np.ndarray,
                     unigram: np.ndarray | None = None) -> np.ndarray:
        """P(the next word's id is in ``[lo, hi)`` | ``words``) for each range (interpolated Witten-Bell);
        ``unigram``: the ranges' probabilities at the unigram level, when known."""
        probs = self._unigram(los, his) if unigram is None else unigram
        for k in range(1, self.order):
            longer = self._interpolate(k, words[len(words) - k:], los, his, probs)
            if longer is None:
                break  # an unseen history: the longer ones are unseen too
            probs = longer
        return probs

    def _unigram(self, los: np.ndarray, his: np.ndarray) -> np.ndarray:
        """The ranges' probabilities with no word history: the unigram counts over a uniform base."""
        probs = self._interpolate(0, (), los, his, (his - los) / float(self._base - 1))
        if probs is None:
            raise ValueError("the word LM has no unigram table")
        return probs

    def _interpolate(self, k: int, history: tuple[int, ...], los: np.ndarray, his: np.ndarray,
                     lower: np.ndarray) -> np.ndarray | None:
        """One Witten-Bell step: the ranges' probabilities after ``history`` (``k`` words) from ``lower``, the
        ones after its last ``k - 1``; ``None`` when ``history`` was never seen."""
        table = self.tables[k]
        key = pack_key(history, self._base)
        index = int(table.keys.searchsorted(key))  # (the method: np.searchsorted's dispatch costs more here)
        if index == len(table.keys) or table.keys[index] != key:
            return None
        start, stop = int(table.offsets[index]), int(table.offsets[index + 1])
        followers, cumulative = table.words[start:stop], self._cumulative[k]
        counts = cumulative[start + followers.searchsorted(his)] - cumulative[start + followers.searchsorted(los)]
        types = float(table.types[index])
        return (counts + types * lower) / (float(table.totals[index]) + types)

    def _node(self, prefix: tuple[int, ...]) -> _Node | None:
        """The lexicon ranges of ``prefix`` (cached); ``None`` when no word starts with it."""
        if prefix in self._nodes:
            return self._nodes[prefix]
        lo = bisect.bisect_left(self.lexicon, prefix)
        hi = bisect.bisect_left(self.lexicon, prefix + (self.vocab_size,))
        node = None
        if lo < hi:
            word = lo if self.lexicon[lo] == prefix else -1
            first = lo + (word >= 0)
            letters = np.array([self.lexicon[i][len(prefix)] for i in range(first, hi)], dtype=np.int64)
            starts = np.flatnonzero(np.diff(letters, prepend=-1))  # where each next letter's words begin
            child_los = first + starts
            child_his = np.append(child_los[1:], hi)[:len(child_los)]
            own = (word, word + 1) if word >= 0 else (0, 0)
            los, his = np.append(child_los, [lo, own[0]]), np.append(child_his, [hi, own[1]])
            node = _Node(word, letters[starts], los, his, self._unigram(los, his))
        return remember(self._nodes, prefix, node)

    def sentence_log_prob(self, ids: Sequence[int]) -> float:
        """log P of a whole sentence (its characters, then the boundary)."""
        return sentence_log_prob(self, ids)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """``path`` (.npz, compressed): the word tables, the lexicon and the character LM, with a JSON header."""
        header = {"format_version": FORMAT_VERSION, "kind": KIND, "order": self.order, "space": self.space,
                  "mix": self.mix, "info": self.info}
        lengths = np.array([len(word) for word in self.lexicon], dtype=np.int32)
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                  "lexicon_lengths": lengths,
                  "lexicon_chars": np.array([c for word in self.lexicon for c in word], dtype=np.uint8)}
        for k, table in enumerate(self.tables):
            arrays.update({f"word_{name}_{k}": getattr(table, name).astype(dtype) for name, dtype in (
                ("keys", np.int64), ("totals", np.int64), ("types", np.int32), ("offsets", np.int64),
                ("words", np.int32), ("counts", np.int32))})
        arrays.update({f"char_{name}": value for name, value in self.char_lm.arrays().items()})
        return save_arrays(path, arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> WordLexiconLM:
        """The model of the arrays :meth:`save` writes; ``ValueError`` (or ``KeyError``) when they are not one."""
        header = json.loads(bytes(arrays["header"]).decode())
        if header.get("kind") != KIND or header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a tokenspeech word LM (format version {header.get('format_version')}, "
                             f"kind {header.get('kind')})")
        order = int(header["order"])
        tables = [_WordTable(*(np.asarray(arrays[f"word_{name}_{k}"]).astype(np.int64) for name in
                               ("keys", "totals", "types", "offsets", "words", "counts")))
                  for k in range(order)]
        chars = np.asarray(arrays["lexicon_chars"]).astype(np.int64).tolist()
        ends = np.cumsum(arrays["lexicon_lengths"]).tolist()
        lexicon = [tuple(chars[a:b]) for a, b in zip([0] + ends[:-1], ends)]
        char_lm = CharNgramLM.from_arrays({name[len("char_"):]: arrays[name] for name in arrays
                                           if name.startswith("char_")})
        return cls(lexicon, order, tables, char_lm, int(header["space"]), float(header["mix"]), header.get("info"))

    @classmethod
    def load(cls, path: str | Path) -> WordLexiconLM:
        """A model written by :meth:`save`; ``ValueError`` for anything else."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_arrays(data)
        except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: cannot read the word LM ({error})") from error

def _words(ids: Sequence[int], space: int) -> list[list[int]]:
    words, current = [], []
    for token in ids:
        if token == space:
            words.append(current)
            current = []
        else:
            current.append(int(token))
    words.append(current)
    return words

