"""Log-mel features: the one definition used by training, PyTorch and ONNX.

Everything here is numpy (no torch), so the ONNX runtime can import it. The
PyTorch module :class:`tokenspeech.models.frontend.LogMel` builds its weights
from :func:`dft_basis` and :func:`mel_filterbank`, so both backends compute the
same thing by construction.

Definition (axis glossary: ``B`` batch, ``T`` samples, ``F`` frames,
``M`` mel bands, ``K = n_fft // 2 + 1`` frequency bins, ``W`` window length):

1. Framing: ``center=False`` and no padding, so frame ``f`` covers samples
   ``[f * hop_length, f * hop_length + win_length)`` and depends on nothing
   else. ``F = 0`` if ``T < win_length`` else ``1 + (T - win_length) // hop``.
   Features of a long signal therefore equal the concatenation of features of
   chunks that start on multiples of ``hop_length`` and overlap by
   ``win_length - hop_length`` samples (streaming needs no extra state).
2. Window: periodic Hann of length ``win_length``. The windowed frame is
   zero-padded *at the end* to ``n_fft`` samples. (``torch.stft`` centres the
   window inside ``n_fft`` instead; that only changes the phase, never the
   power spectrum used below.)
3. Power spectrum: ``|X_k|^2`` of the ``n_fft``-point real DFT, ``K`` bins.
4. Mel: Slaney-scale, Slaney-normalised triangular filters (librosa's
   default ``librosa.filters.mel``), ``[M, K] @ [K, F]``.
5. Log: natural log of ``max(mel_power, log_floor)``.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

# Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
# (27 mel steps per factor 6.4 in frequency).
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the log-mel front-end; validated on construction.

    ``f_max=None`` means the Nyquist frequency ``sample_rate / 2``.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            _require_positive_int(name, getattr(self, name))
        if self.win_length > self.n_fft:
            raise ValueError(
                f"MelConfig: win_length ({self.win_length}) must be <= n_fft ({self.n_fft})"
            )
        if self.hop_length > self.win_length:
            raise ValueError(
                f"MelConfig: hop_length ({self.hop_length}) must be <= win_length "
                f"({self.win_length}), otherwise samples between frames are ignored"
            )
        self._validate_band()
        if not _is_real(self.log_floor) or not self.log_floor > 0:
            raise ValueError(f"MelConfig: log_floor must be a number > 0, got {self.log_floor!r}")

    def _validate_band(self) -> None:
        nyquist = self.sample_rate / 2
        if not _is_real(self.f_min) or self.f_min < 0:
            raise ValueError(f"MelConfig: f_min must be a number >= 0, got {self.f_min!r}")
        if self.f_max is not None and not _is_real(self.f_max):
            raise ValueError(f"MelConfig: f_max must be a number or None, got {self.f_max!r}")
        if self.f_max is not None and self.f_max > nyquist:
            raise ValueError(
                f"MelConfig: f_max ({self.f_max} Hz) must be <= the Nyquist frequency "
                f"({nyquist} Hz for sample_rate={self.sample_rate}); use None for Nyquist"
            )
        if self.f_min >= self.f_max_hz:
            raise ValueError(
                f"MelConfig: f_min ({self.f_min} Hz) must be < f_max ({self.f_max_hz} Hz)"
            )

    @property
    def f_max_hz(self) -> float:
        """Upper edge of the mel filterbank in Hz (``f_max`` or Nyquist)."""
        return float(self.sample_rate / 2 if self.f_max is None else self.f_max)

    @property
    def n_bins(self) -> int:
        """Number of real-DFT frequency bins ``K = n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def frame_rate(self) -> float:
        """Feature frames per second of audio."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (no padding, ``center=False``)."""
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if num_samples < self.win_length:
            return 0
        return 1 + (num_samples - self.win_length) // self.hop_length

    def to_json(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable), for model cards and manifests."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MelConfig:
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError``, missing keys default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MelConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _require_positive_int(name: str, value: object) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"MelConfig: {name} must be an integer > 0, got {value!r}")


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    safe = np.maximum(hz, _SLANEY_BREAK_HZ)  # avoids log(0) in the branch not taken
    logarithmic = _SLANEY_BREAK_MEL + np.log(safe / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz < _SLANEY_BREAK_HZ, linear, logarithmic)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel < _SLANEY_BREAK_MEL, linear, logarithmic)


def mel_filterbank(cfg: MelConfig, bin_hz: np.ndarray | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, float32 ``[M, K]``.

    Filter ``m`` rises linearly from edge ``m`` to ``m + 1`` and falls to
    ``m + 2``, where the ``M + 2`` edges are equally spaced on the Slaney mel
    scale between ``f_min`` and ``f_max``; each is scaled by
    ``2 / (edge[m + 2] - edge[m])`` (constant energy per filter). Equals
    ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (defaults).

    ``bin_hz [K]`` replaces the frequencies at which the filters are read for
    each DFT bin (default: the bins' own, ``k * sample_rate / n_fft``); a
    warped axis gives vocal-tract-length perturbation in training.
    """
    if bin_hz is None:
        bin_hz = np.arange(cfg.n_bins, dtype=np.float64) * cfg.sample_rate / cfg.n_fft
    edges_mel = np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max_hz), cfg.n_mels + 2)
    edges_hz = mel_to_hz(edges_mel)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (upper - lower))).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window ``[W]`` float64 (``torch.hann_window(W, periodic=True)``)."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def dft_basis(cfg: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windowed real-DFT matrices ``(real, imag)``, each float32 ``[K, W]``.

    ``real @ frame`` and ``imag @ frame`` for a ``[W]`` frame are the real and
    imaginary parts of the ``n_fft``-point DFT of the Hann-windowed frame
    zero-padded at the end. The ``n_fft - W`` columns that would multiply the
    padding zeros are left out, so the kernel spans exactly one frame
    (``W = win_length``), matching the framing rule.
    """
    k = np.arange(cfg.n_bins, dtype=np.float64)[:, None]
    n = np.arange(cfg.win_length, dtype=np.float64)[None, :]
    # Reduce k*n modulo n_fft before scaling: keeps the angle small and exact.
    angle = 2.0 * np.pi * ((k * n) % cfg.n_fft) / cfg.n_fft
    window = hann_window(cfg.win_length)[None, :]
    real = (window * np.cos(angle)).astype(np.float32)
    imag = (-window * np.sin(angle)).astype(np.float32)
    return real, imag


def frame_signal(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """View ``[..., T]`` as frames ``[..., F, W]`` (no copy, no padding)."""
    num_frames = cfg.num_frames(wav.shape[-1])
    if num_frames == 0:
        return np.zeros(wav.shape[:-1] + (0, cfg.win_length), dtype=wav.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(wav, cfg.win_length, axis=-1)
    return windows[..., : num_frames * cfg.hop_length : cfg.hop_length, :]


@functools.lru_cache(maxsize=8)
def _float64_weights(cfg: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The Hann window ``[W]`` and the transposed filterbank ``[K, M]`` in float64, read-only, made once."""
    weights = (hann_window(cfg.win_length), mel_filterbank(cfg).T.astype(np.float64))
    for array in weights:
        array.setflags(write=False)
    return weights


def log_mel_numpy(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Log-mel features of ``wav [T]`` -> ``[M, F]`` or ``wav [B, T]`` -> ``[B, M, F]``.

    float32 output: ``log(max(mel @ |DFT(window * frame)|^2, log_floor))``,
    natural log of the *power* spectrum (see the module docstring). Samples
    are rounded to float32 first, then the float32 weights are applied in
    float64.
    """
    wav = np.asarray(wav)
    if wav.ndim not in (1, 2):
        raise ValueError(f"log_mel_numpy expects wav [T] or [B, T], got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"log_mel_numpy expects floating-point samples, got {wav.dtype}")
    # float64 throughout: this is the reference implementation, and it makes
    # each frame's value independent of how many frames share a transform
    # (so streaming equals offline to float32 ulps). An FFT of each windowed
    # frame, zero-padded at the end, is the DFT of dft_basis in half the time
    # of the matrix products (22 vs 44 ms for 9 s of audio on one thread).
    window, mel_weights = _float64_weights(cfg)
    frames = frame_signal(wav.astype(np.float32, copy=False).astype(np.float64), cfg)  # [..., F, W]
    spectrum = np.fft.rfft(frames * window, n=cfg.n_fft, axis=-1)  # [..., F, K]
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    mel = power @ mel_weights  # [..., F, M]
    log_mel = np.log(np.maximum(mel, cfg.log_floor))
    return np.ascontiguousarray(np.swapaxes(log_mel, -1, -2), dtype=np.float32)
