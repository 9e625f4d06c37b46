"""Grouping decoded characters into words with frame spans. NumPy-free, pure Python.

Axes: N tokens. Frames are encoder frames; the recogniser turns them into
seconds (``frame * frame_seconds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WordSpan:
    """The tokens of one word and its frame span ``[start, end)``."""

    tokens: tuple[int, ...]
    start: int
    end: int


def word_spans(tokens: Sequence[int], starts: Sequence[int], ends: Sequence[int], space_id: int) -> list[WordSpan]:
    """Split ``tokens [N]`` at ``space_id``; a word spans its first token's start to its last token's end.

    ``starts``/``ends [N]`` are per-token frame spans (end exclusive). Spans
    are forced to be ordered and non-empty: a word never starts before the
    previous word ended.
    """
    if not len(tokens) == len(starts) == len(ends):
        raise ValueError("tokens, starts and ends must have the same length")
    words: list[WordSpan] = []
    current: list[int] = []
    first = last = 0
    for token, start, end in list(zip(tokens, starts, ends)) + [(space_id, 0, 0)]:
        if token == space_id:
            if current:
                begin = max(first, words[-1].end if words else 0)
                words.append(WordSpan(tuple(current), begin, max(last, begin + 1)))
            current = []
            continue
        if not current:
            first, last = int(start), int(end)
        last = max(last, int(end))
        current.append(int(token))
    return words
