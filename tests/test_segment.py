"""Energy VAD segmentation of long recordings, and stitching segment transcripts back together."""

from __future__ import annotations

import numpy as np
import pytest

from tokenspeech.asr.base import Transcript, WordTiming
from tokenspeech.asr.segment import VadOptions, find_speech_segments, frame_energy_db, stitch
from tokenspeech.errors import ConfigError

RATE = 16000


def burst_signal(seconds: float = 90.0, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tone bursts (1.5-4 s) separated by pauses (0.5-1.5 s) over -60 dBFS noise; returns (wav, bursts)."""
    rng = np.random.default_rng(seed)
    wav = (0.001 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    bursts, t = [], 0.7
    while True:
        length = float(rng.uniform(1.5, 4.0))
        if t + length > seconds - 0.5:
            return wav, bursts
        start = int(t * RATE)
        n = int(length * RATE)
        fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.05 * RATE))
        freq = float(rng.uniform(200, 800))
        wav[start:start + n] += (0.3 * fade * np.sin(2 * np.pi * freq * np.arange(n) / RATE)).astype(np.float32)
        bursts.append((start / RATE, (start + n) / RATE))
        t += length + float(rng.uniform(0.5, 1.5))


def test_long_recording_is_cut_at_pauses_only() -> None:
    wav, bursts = burst_signal()
    segments = find_speech_segments(wav, RATE, max_seconds=20.0)
    assert len(segments) >= 5  # 90 s of speech in pieces of at most 20 s
    assert all(0 <= s < e <= len(wav) for s, e in segments)
    assert all(e - s <= 20 * RATE for s, e in segments)
    assert all(a[1] <= b[0] for a, b in zip(segments, segments[1:]))  # sorted, disjoint
    for start, end in bursts:  # every burst whole inside exactly one segment
        inside = [(s, e) for s, e in segments if s <= start * RATE and end * RATE <= e]
        assert len(inside) == 1, (start, end)
    for s, e in segments:  # no boundary falls inside a burst
        for boundary in (s / RATE, e / RATE):
            assert not any(b0 < boundary < b1 for b0, b1 in bursts)


def test_speech_without_pauses_is_cut_at_the_quietest_moment() -> None:
    rng = np.random.default_rng(1)
    wav = (0.2 * rng.standard_normal(25 * RATE)).astype(np.float32)
    dips = [4.0, 8.5, 13.0, 17.5, 22.0]  # 0.15 s quieter stretches, too short to count as pauses
    for t in dips:
        wav[int(t * RATE):int((t + 0.15) * RATE)] *= 0.05
    segments = find_speech_segments(wav, RATE, max_seconds=10.0)
    assert segments[0][0] == 0 and segments[-1][1] == len(wav)  # nothing dropped
    assert all(e - s <= 10 * RATE for s, e in segments)
    for (_, end), (start, _) in zip(segments, segments[1:]):
        assert end == start  # forced cuts are contiguous
        assert any(t - 0.02 <= end / RATE <= t + 0.17 for t in dips), end / RATE


def test_silence_and_empty_audio_have_no_segments() -> None:
    assert find_speech_segments(np.zeros(40 * RATE, dtype=np.float32), RATE, 20.0) == []
    assert find_speech_segments(np.zeros(0, dtype=np.float32), RATE, 20.0) == []


def test_padding_keeps_onsets_and_stays_in_bounds() -> None:
    wav = np.zeros(10 * RATE, dtype=np.float32)
    wav[RATE: 3 * RATE] = 0.3 * np.sin(np.arange(2 * RATE) * 0.1)
    wav[9 * RATE:] = 0.3 * np.sin(np.arange(RATE) * 0.1)
    segments = find_speech_segments(wav, RATE, max_seconds=5.0, options=VadOptions(padding_seconds=0.2))
    assert segments[0] == (int(0.8 * RATE), int(3.2 * RATE))
    assert segments[-1] == (int(8.8 * RATE), 10 * RATE)


def test_frame_energy_pads_the_last_frame() -> None:
    energy = frame_energy_db(np.ones(25, dtype=np.float32), hop=10)
    assert energy.shape == (3,)
    np.testing.assert_allclose(energy, [0.0, 0.0, 10 * np.log10(0.5)], atol=1e-9)


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="padding_seconds"):
        find_speech_segments(np.zeros(RATE, dtype=np.float32), RATE, 10.0, VadOptions(padding_seconds=-1))
    with pytest.raises(ConfigError, match="max_seconds"):
        find_speech_segments(np.zeros(RATE, dtype=np.float32), RATE, 0.01)


def test_stitch_shifts_words_and_joins_texts() -> None:
    parts = [Transcript("hello there", (WordTiming("hello", 0.1, 0.4), WordTiming("there", 0.5, 0.9))),
             Transcript("  ", ()),
             Transcript("general", (WordTiming("general", 0.2, 0.8),))]
    merged = stitch(parts, [10.0, 20.0, 30.0])
    assert merged.text == "hello there general"
    assert [(w.word, w.start, w.end) for w in merged.words] == [
        ("hello", 10.1, 10.4), ("there", 10.5, 10.9), ("general", 30.2, 30.8)]
    with pytest.raises(ValueError):
        stitch(parts, [0.0])
