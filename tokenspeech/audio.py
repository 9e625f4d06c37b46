"""Audio in and out: load, mono mix, resample, loudness, save.

Every problem with an input file becomes one :class:`AudioError` that names
the file and the problem, so the CLI and the server can report it verbatim.

Decoding uses libsndfile (``soundfile``: WAV, FLAC, Ogg Vorbis/Opus, MP3 on
libsndfile >= 1.1) first and falls back to the ``ffmpeg`` program for
everything else (AAC, M4A, WebM, video containers...). Resampling uses
``soxr`` (through the dependency librosa already brings), which is fast and
high quality. Arrays are float32 mono in [-1, 1], shape ``[T]``.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tokenspeech.errors import AudioError

# Below this RMS (about -70 dBFS) a whole file counts as silent.
SILENCE_RMS = 10 ** (-70 / 20)
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "OPUS"),
                 ".opus": ("OGG", "OPUS")}


@dataclass(frozen=True)
class AudioLimits:
    """What counts as usable input; ``max_seconds=None`` means no upper limit."""

    min_seconds: float = 0.05
    max_seconds: float | None = 3600.0
    reject_silence: bool = True


def _describe(source: str | Path) -> str:
    return str(source)


def _decode_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, rate


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(str(path), "format not readable by libsndfile and ffmpeg is not installed")
    probe = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "wav", "-acodec", "pcm_f32le", "-"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0 or not probe.stdout:
        reason = probe.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(str(path), f"not a readable audio file ({reason[-1] if reason else 'ffmpeg failed'})")
    data, rate = sf.read(io.BytesIO(probe.stdout), dtype="float32", always_2d=True)
    return data, rate


def to_mono(data: np.ndarray) -> np.ndarray:
    """``[T, C]`` or ``[T]`` -> ``[T]`` float32 by averaging channels."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    return data.mean(axis=1, dtype=np.float32)


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono ``[T]`` audio; a no-op when the rates match."""
    if orig_rate == target_rate:
        return wav.astype(np.float32, copy=False)
    import soxr  # installed with librosa; imported here to keep import time low

    return soxr.resample(wav.astype(np.float32, copy=False), orig_rate, target_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def check_audio(wav: np.ndarray, rate: int, source: str, limits: AudioLimits = AudioLimits()) -> None:
    """Raise :class:`AudioError` when ``wav`` is empty, too short, too long or silent."""
    if wav.size == 0:
        raise AudioError(source, "the audio is empty (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(source, "the audio contains NaN or infinite samples")
    seconds = wav.shape[-1] / rate
    if seconds < limits.min_seconds:
        raise AudioError(source, f"the audio is too short ({seconds:.3f} s < {limits.min_seconds} s)")
    if limits.max_seconds is not None and seconds > limits.max_seconds:
        raise AudioError(source, f"the audio is too long ({seconds:.1f} s > {limits.max_seconds:.0f} s)")
    if limits.reject_silence and rms(wav) < SILENCE_RMS:
        raise AudioError(source, "the audio is silent (RMS below -70 dBFS)")


def load_audio(
    path: str | Path,
    sample_rate: int | None = 16000,
    limits: AudioLimits = AudioLimits(),
) -> tuple[np.ndarray, int]:
    """Read any audio file as float32 mono ``[T]``, resampled to ``sample_rate``.

    ``sample_rate=None`` keeps the file's own rate. Returns ``(wav, rate)``.
    Raises :class:`AudioError` for a missing, unreadable, empty, silent or
    over-long file.
    """
    path = Path(path)
    source = _describe(path)
    if not path.exists():
        raise AudioError(source, "no such file")
    if path.is_dir():
        raise AudioError(source, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(source, "the file is empty (0 bytes)")
    try:
        data, rate = _decode_with_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = _decode_with_ffmpeg(path)
    except OSError as error:
        raise AudioError(source, f"cannot read the file ({error.strerror or error})") from error
    wav = to_mono(data)
    check_audio(wav, rate, source, limits)
    if sample_rate is not None:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate


def save_audio(path: str | Path, wav: np.ndarray, rate: int) -> None:
    """Write mono ``[T]`` float audio as WAV/FLAC (16-bit) or Ogg-Opus, by the suffix.

    The file appears atomically: it is written beside its target and renamed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise AudioError(str(path), f"cannot write {suffix or 'files without a suffix'}; use one of "
                         + ", ".join(sorted(WRITE_FORMATS)))
    container, subtype = WRITE_FORMATS[suffix]
    if container == "OGG" and rate not in (8000, 12000, 16000, 24000, 48000):
        wav, rate = resample(wav, rate, 48000), 48000
    tmp = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(tmp), np.clip(wav, -1.0, 1.0), rate, format=container, subtype=subtype)
    tmp.replace(path)


def rms(wav: np.ndarray) -> float:
    """Root mean square of ``wav`` (0.0 for empty input)."""
    if wav.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))


def rms_dbfs(wav: np.ndarray) -> float:
    """RMS level in dB relative to full scale; ``-inf`` for digital silence."""
    value = rms(wav)
    return 20 * math.log10(value) if value > 0 else float("-inf")


def normalize_loudness(wav: np.ndarray, target_dbfs: float = -23.0, peak: float = 0.99) -> np.ndarray:
    """Scale ``wav`` to an RMS of ``target_dbfs`` without letting the peak exceed ``peak``."""
    level = rms(wav)
    if level == 0:
        return wav.astype(np.float32, copy=True)
    gain = 10 ** (target_dbfs / 20) / level
    max_abs = float(np.max(np.abs(wav)))
    if max_abs * gain > peak:
        gain = peak / max_abs
    return (wav * gain).astype(np.float32)


def trim_silence(wav: np.ndarray, rate: int, threshold_db: float = -45.0, margin_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``threshold_db`` below the loudest 10 ms.

    Keeps ``margin_s`` of audio on each side of the speech. Returns ``wav``
    unchanged when it has no frame above the threshold.
    """
    hop = max(1, int(rate * 0.01))
    frames = len(wav) // hop
    if frames == 0:
        return wav
    energy = np.sqrt(np.mean(np.square(wav[: frames * hop].reshape(frames, hop), dtype=np.float64), axis=1))
    peak = float(energy.max())
    if peak <= 0:
        return wav
    loud = np.flatnonzero(energy >= peak * 10 ** (threshold_db / 20))
    margin = int(margin_s * rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wav), (loud[-1] + 1) * hop + margin)
    return wav[start:end]
