"""How close a degraded signal (codec output, vocoder, resynthesis) is to its reference.

All inputs are float32 mono ``[T]`` numpy arrays at a stated ``rate``.

- :func:`align_delay` finds the lag that best lines the degraded signal up
  with the reference (FFT cross-correlation) and trims both to their overlap;
  codecs and vocoders often add a few ms of latency, which every metric below
  would otherwise count as distortion.
- :func:`pesq_wb` / :func:`pesq_nb`: ITU-T P.862.2 wide-band (16 kHz) and
  P.862 narrow-band (8 kHz) PESQ, MOS-LQO from about 1.0 (bad) to 4.64 / 4.55
  (transparent). Input is resampled to the rate each mode needs.
- :func:`stoi`: short-time objective intelligibility, 0..1 (pystoi; it
  resamples to 10 kHz internally).
- :func:`log_mel_distance`: mean absolute difference of the natural-log power
  mel spectrograms of :mod:`tokenspeech.features` (16 kHz, 80 mels); 0 for
  identical audio, in nepers (1.0 is a factor of e in power).
- :func:`remove_delay` does the same for a delay known in advance.
- :func:`compare` aligns, then computes all of them at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tokenspeech.audio import resample
from tokenspeech.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

PESQ_WB_RATE = 16000
PESQ_NB_RATE = 8000


def _mono(wav: np.ndarray, name: str) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{name} audio", f"expected mono samples of shape [T], got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(f"{name} audio", "the audio is empty (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name} audio", "the audio contains NaN or infinite samples")
    return wav


def _same_length(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length = min(ref.shape[0], deg.shape[0])
    return ref[:length], deg[:length]


def align_delay(ref: np.ndarray, deg: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Line ``deg`` up with ``ref``; return ``(ref, deg, shift)`` trimmed to their overlap.

    ``shift`` is the lag in samples with ``deg[n + shift] ~ ref[n]``: positive
    when the degraded signal is late, negative when it is early. Only lags
    with ``|shift| <= max_shift`` are considered; the one with the largest
    cross-correlation wins. Both returned arrays have the same length.
    """
    from scipy.signal import correlate, correlation_lags

    ref, deg = _mono(ref, "reference"), _mono(deg, "degraded")
    if max_shift < 0:
        raise ConfigError(f"max_shift must be >= 0 samples, got {max_shift}")
    corr = correlate(deg.astype(np.float64), ref.astype(np.float64), mode="full", method="fft")
    lags = correlation_lags(deg.shape[0], ref.shape[0], mode="full")
    window = np.abs(lags) <= max_shift
    shift = int(lags[window][np.argmax(corr[window])])
    return (*remove_delay(ref, deg, shift), shift)


def remove_delay(ref: np.ndarray, deg: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ref, deg)`` trimmed to their overlap when ``deg[n + shift] ~ ref[n]`` (a known delay)."""
    ref, deg = _mono(ref, "reference"), _mono(deg, "degraded")
    if shift > 0:
        deg = deg[shift:]
    elif shift < 0:
        ref = ref[-shift:]
    ref, deg = _same_length(ref, deg)
    if ref.size == 0:
        raise AudioError("degraded audio", f"no overlap with the reference after a {shift}-sample shift")
    return ref, deg


def _pesq(ref: np.ndarray, deg: np.ndarray, rate: int, mode: str) -> float:
    from pesq import PesqError, pesq

    for name, wav in (("reference", ref), ("degraded", deg)):
        if not np.any(wav):
            raise AudioError(f"{name} audio", f"is digital silence; PESQ ({mode}) needs speech")
    try:
        return float(pesq(rate, ref, deg, mode))
    except PesqError as error:
        reason = error.args[0] if error.args else error
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise AudioError("reference/degraded audio", f"PESQ ({mode}) cannot score this pair: {reason}") from error


def pesq_wb(ref: np.ndarray, deg: np.ndarray, rate: int = 16000) -> float:
    """Wide-band PESQ (P.862.2) of ``deg`` against ``ref``; both resampled to 16 kHz."""
    ref, deg = _same_length(_mono(ref, "reference"), _mono(deg, "degraded"))
    return _pesq(resample(ref, rate, PESQ_WB_RATE), resample(deg, rate, PESQ_WB_RATE), PESQ_WB_RATE, "wb")


def pesq_nb(ref: np.ndarray, deg: np.ndarray, rate: int = 16000) -> float:
    """Narrow-band PESQ (P.862) of ``deg`` against ``ref``; both resampled to 8 kHz."""
    ref, deg = _same_length(_mono(ref, "reference"), _mono(deg, "degraded"))
    return _pesq(resample(ref, rate, PESQ_NB_RATE), resample(deg, rate, PESQ_NB_RATE), PESQ_NB_RATE, "nb")


def stoi(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """STOI (0..1) of ``deg`` against ``ref`` at ``rate``."""
    from pystoi import stoi as pystoi_stoi

    ref, deg = _same_length(_mono(ref, "reference"), _mono(deg, "degraded"))
    return float(pystoi_stoi(ref.astype(np.float64), deg.astype(np.float64), rate, extended=False))


def log_mel_distance(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Mean ``|log_mel(ref) - log_mel(deg)|`` over the frames both signals cover."""
    from tokenspeech.features import MelConfig, log_mel_numpy

    cfg = MelConfig()
    ref, deg = _same_length(_mono(ref, "reference"), _mono(deg, "degraded"))
    ref_mel = log_mel_numpy(resample(ref, rate, cfg.sample_rate), cfg)  # [M, F]
    deg_mel = log_mel_numpy(resample(deg, rate, cfg.sample_rate), cfg)
    frames = min(ref_mel.shape[-1], deg_mel.shape[-1])
    if frames == 0:
        raise AudioError("reference audio", f"too short for one {cfg.win_length}-sample mel frame")
    return float(np.mean(np.abs(ref_mel[:, :frames] - deg_mel[:, :frames])))


@dataclass(frozen=True)
class CodecScores:
    """All codec metrics for one pair, after delay alignment.

    ``delay_samples`` is at the input ``rate`` (positive: the degraded signal
    is late); ``seconds`` is the length of the aligned overlap that was scored.
    """

    pesq_wb: float
    pesq_nb: float
    stoi: float
    log_mel_distance: float
    delay_samples: int
    rate: int
    seconds: float

    @property
    def delay_ms(self) -> float:
        """The delay in milliseconds."""
        return 1000.0 * self.delay_samples / self.rate


def compare(ref: np.ndarray, deg: np.ndarray, rate: int, max_shift_seconds: float = 0.25,
            delay: int | None = None) -> CodecScores:
    """Align ``deg`` to ``ref`` and compute every metric.

    ``delay`` (samples at ``rate``) is the degraded signal's known lateness, e.g. a
    codec's declared output delay; without it the lag is searched up to
    ``max_shift_seconds`` by cross-correlation, which a codec's phase changes can
    fool (tscodec on a short clip: 265 found against its exact 480 samples).
    """
    if rate <= 0:
        raise ConfigError(f"rate must be a positive sample rate in Hz, got {rate}")
    if delay is None:
        ref, deg, shift = align_delay(ref, deg, int(round(max_shift_seconds * rate)))
    else:
        ref, deg = remove_delay(ref, deg, delay)
        shift = delay
    logger.debug("aligned degraded audio by %d samples", shift)
    return CodecScores(
        pesq_wb=pesq_wb(ref, deg, rate),
        pesq_nb=pesq_nb(ref, deg, rate),
        stoi=stoi(ref, deg, rate),
        log_mel_distance=log_mel_distance(ref, deg, rate),
        delay_samples=shift,
        rate=rate,
        seconds=ref.shape[0] / rate,
    )
