"""Cut long recordings into speech segments a recogniser accepts, and stitch the results.

An energy voice-activity detector (VAD), pure NumPy:

1. frame energies in dB over fixed frames (``frame_seconds``);
2. an adaptive threshold between the recording's noise floor (a low
   percentile of the frame energies) and its loud speech (a high percentile),
   so it works for studio silence and for a noisy room alike;
3. speech regions = frames above the threshold, with pauses shorter than
   ``min_silence_seconds`` bridged, then ``padding_seconds`` added on both
   sides so word onsets and endings are not clipped;
4. neighbouring regions merged while they fit in ``max_seconds`` (fewer,
   longer segments give the recogniser context and batch better);
5. regions still longer than ``max_seconds`` (speech without a usable pause)
   cut at the quietest moment of the second half of each window.

Segments are ``(start_sample, end_sample)`` pairs, sorted, disjoint, each at
most ``max_seconds`` long. Audio between segments is silence by the
detector's judgement and is not transcribed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tokenspeech.asr.base import Transcript
from tokenspeech.errors import ConfigError

# Energy of an all-zero frame; keeps log10 finite.
FLOOR_DB = -100.0


@dataclass(frozen=True)
class VadOptions:
    """How the energy VAD finds speech and where it may cut."""

    frame_seconds: float = 0.02  # analysis frame (and cut resolution)
    min_silence_seconds: float = 0.3  # shorter pauses never split speech
    padding_seconds: float = 0.2  # kept around each speech region
    floor_percentile: float = 10.0  # frame-energy percentile taken as the noise floor
    peak_percentile: float = 99.0  # ... and as loud speech
    margin_db: float = 10.0  # speech is at least this far above the floor
    range_db: float = 35.0  # ... or at most this far below loud speech, whichever is higher
    headroom_db: float = 6.0  # frames this close to loud speech always count as speech
    min_threshold_db: float = -70.0  # nothing quieter than this (dBFS) is speech
    smooth_seconds: float = 0.1  # energy smoothing when looking for the quietest cut point

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values the detector cannot work with."""
        for name in ("frame_seconds", "min_silence_seconds", "smooth_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"VadOptions.{name} must be positive, got {getattr(self, name)}")
        if self.padding_seconds < 0:
            raise ConfigError(f"VadOptions.padding_seconds must be >= 0, got {self.padding_seconds}")
        if not 0 <= self.floor_percentile < self.peak_percentile <= 100:
            raise ConfigError("VadOptions needs 0 <= floor_percentile < peak_percentile <= 100, got "
                              f"{self.floor_percentile} and {self.peak_percentile}")


def frame_energy_db(wav: np.ndarray, hop: int) -> np.ndarray:
    """Mean-square energy in dB of consecutive ``hop``-sample frames of ``wav`` ``[T]``.

    Returns ``[ceil(T / hop)]`` float64; the last frame is zero-padded and
    all-zero frames read :data:`FLOOR_DB`.
    """
    frames = -(-len(wav) // hop)
    padded = np.zeros(frames * hop, dtype=np.float64)
    padded[: len(wav)] = wav
    power = np.mean(np.square(padded.reshape(frames, hop)), axis=1)
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), FLOOR_DB)


def speech_threshold_db(energy_db: np.ndarray, options: VadOptions = VadOptions()) -> float:
    """The adaptive speech/silence threshold for one recording's frame energies."""
    floor = float(np.percentile(energy_db, options.floor_percentile))
    peak = float(np.percentile(energy_db, options.peak_percentile))
    threshold = max(floor + options.margin_db, peak - options.range_db)
    return max(min(threshold, peak - options.headroom_db), options.min_threshold_db)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index runs where ``mask`` is true."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _speech_regions(energy_db: np.ndarray, options: VadOptions, hop_seconds: float) -> list[tuple[int, int]]:
    """Padded speech regions in frames, pauses shorter than the minimum bridged."""
    speech = energy_db > speech_threshold_db(energy_db, options)
    min_gap = max(1, round(options.min_silence_seconds / hop_seconds))
    pad = round(options.padding_seconds / hop_seconds)
    regions: list[tuple[int, int]] = []
    for start, end in _runs(speech):
        start, end = max(0, start - pad), min(len(energy_db), end + pad)
        if regions and start - regions[-1][1] < min_gap:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def _merge(regions: list[tuple[int, int]], max_frames: int) -> list[tuple[int, int]]:
    """Join neighbouring regions while the joined span fits in ``max_frames``."""
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and end - merged[-1][0] <= max_frames:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _force_cuts(start: int, end: int, smooth_db: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into pieces of at most ``max_frames``, each cut at the quietest frame
    of the second half of its window."""
    pieces = []
    while end - start > max_frames:
        low = start + max(1, max_frames // 2)
        cut = low + int(np.argmin(smooth_db[low: start + max_frames + 1]))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def find_speech_segments(
    wav: np.ndarray, rate: int, max_seconds: float, options: VadOptions = VadOptions()
) -> list[tuple[int, int]]:
    """Speech segments of mono ``wav`` ``[T]`` as ``(start_sample, end_sample)`` pairs.

    Every segment is at most ``max_seconds`` long (rounded down to whole
    frames). Returns ``[]`` when nothing in ``wav`` sounds like speech.
    """
    options.validate()
    hop = max(1, round(options.frame_seconds * rate))
    max_frames = int(max_seconds * rate) // hop
    if max_frames < 2:
        raise ConfigError(f"max_seconds={max_seconds} is shorter than two VAD frames ({2 * hop / rate:.3f} s)")
    if len(wav) == 0:
        return []
    energy = frame_energy_db(wav, hop)
    width = max(1, round(options.smooth_seconds * rate / hop))
    smooth = np.convolve(energy, np.ones(width) / width, mode="same")
    segments = []
    for start, end in _merge(_speech_regions(energy, options, hop / rate), max_frames):
        for piece_start, piece_end in _force_cuts(start, end, smooth, max_frames):
            segments.append((piece_start * hop, min(piece_end * hop, len(wav))))
    return segments


def stitch(transcripts: Sequence[Transcript], starts_seconds: Sequence[float]) -> Transcript:
    """One transcript from per-segment ones, each moved to its segment's start time.

    Texts are joined with single spaces (empty ones skipped); word timings
    are concatenated in segment order.
    """
    if len(transcripts) != len(starts_seconds):
        raise ValueError(f"{len(transcripts)} transcripts but {len(starts_seconds)} start times")
    moved = [t.shifted(start) for t, start in zip(transcripts, starts_seconds)]
    text = " ".join(t.text.strip() for t in moved if t.text.strip())
    return Transcript(text, tuple(word for t in moved for word in t.words))
