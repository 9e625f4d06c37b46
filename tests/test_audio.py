"""Audio I/O: formats, mono mixing, resampling, and one clear error for every bad file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokenspeech.audio import (AudioLimits, load_audio, normalize_loudness, resample, rms_dbfs, save_audio,
                               trim_silence)
from tokenspeech.errors import AudioError

RATE = 16000


def tone(seconds: float = 1.0, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    save_audio(path, tone(), RATE)
    wav, rate = load_audio(path)
    assert rate == RATE
    assert abs(len(wav) - RATE) < 0.05 * RATE  # Opus pads a little
    assert abs(rms_dbfs(wav) - rms_dbfs(tone())) < 1.0


def test_stereo_is_mixed_and_resampled(tmp_path: Path) -> None:
    left, right = tone(rate=44100), np.zeros(44100, dtype=np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100)
    wav, rate = load_audio(tmp_path / "s.wav", sample_rate=RATE)
    assert rate == RATE and abs(len(wav) - RATE) <= 1
    assert abs(rms_dbfs(wav) - (rms_dbfs(tone()) - 6.02)) < 0.3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_fallback_reads_m4a(tmp_path: Path) -> None:
    save_audio(tmp_path / "a.wav", tone(), RATE)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), str(tmp_path / "a.m4a")], check=True)
    wav, rate = load_audio(tmp_path / "a.m4a")
    assert rate == RATE and abs(len(wav) - RATE) < 0.1 * RATE


def test_keep_native_rate(tmp_path: Path) -> None:
    save_audio(tmp_path / "a.wav", tone(rate=22050), 22050)
    assert load_audio(tmp_path / "a.wav", sample_rate=None)[1] == 22050


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not audio at all" * 20), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(16000, dtype=np.float32), RATE), "silent"),
        (lambda p: sf.write(p, tone(0.01), RATE), "too short"),
        (lambda p: sf.write(p, tone(3.0), RATE), "too long"),
    ],
    ids=["missing", "empty", "garbage", "silent", "short", "long"],
)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path: Path, make, problem: str) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=problem) as caught:
        load_audio(path, limits=AudioLimits(max_seconds=2.0))
    assert str(path) in str(caught.value)


def test_directory_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_cannot_write_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="cannot write .xyz"):
        save_audio(tmp_path / "a.xyz", tone(), RATE)


def test_resample_preserves_a_tone() -> None:
    out = resample(tone(rate=22050), 22050, RATE)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * RATE / len(out) - 440) < 2


def test_trim_silence_and_loudness() -> None:
    pad = np.zeros(RATE, dtype=np.float32)
    trimmed = trim_silence(np.concatenate([pad, tone(0.5), pad]), RATE, margin_s=0.1)
    assert abs(len(trimmed) - int(0.7 * RATE)) <= 160
    louder = normalize_loudness(tone() * 0.01, -23.0)
    assert abs(rms_dbfs(louder) + 23.0) < 0.1
    assert np.max(np.abs(normalize_loudness(tone(), 0.0))) <= 0.99 + 1e-6
