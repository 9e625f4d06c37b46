"""What a recogniser returns, and the interface the batch CLI and server use.

Times are seconds from the start of the audio given to the recogniser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

DECODERS = ("ctc", "paraformer", "ar", "semiar")
FRAME_SECONDS = 0.04  # one encoder frame: 4 hops of 10 ms


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """One recognised utterance."""

    text: str
    words: tuple[WordTiming, ...] = field(default_factory=tuple)

    def shifted(self, seconds: float) -> "Transcript":
        """The same transcript with every time moved by ``seconds`` (stitching segments)."""
        return Transcript(self.text, tuple(WordTiming(w.word, w.start + seconds, w.end + seconds)
                                           for w in self.words))


class Recognizer(Protocol):
    """Batch recognition of 16 kHz mono float32 audio."""

    sample_rate: int
    max_seconds: float  # the longest input one call accepts; longer audio must be segmented first

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Recognise each ``[T]`` array; results in input order."""
        ...
