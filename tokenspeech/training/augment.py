"""Training-time audio augmentation for ASR: speed, noise, rooms, telephone band, VTLP, SpecAugment.

Waveforms are float32 mono ``[S]`` at ``rate`` Hz; every random choice comes
from a ``numpy.random.Generator`` the caller seeds (per step), so a resumed
run sees exactly the same augmented batches.

Rooms: with ``pyroomacoustics`` installed, a shoebox room of random size,
absorption, source and microphone position is simulated (image method).
Without it (the default install) the impulse response is synthetic: a direct
path followed by exponentially decaying Gaussian noise whose decay gives the
drawn RT60 (amplitude falls 60 dB in RT60 seconds), after a short
pre-delay. Both are normalised so the direct path keeps the level.

Vocal-tract-length perturbation (Jaitly & Hinton, 2013) reads the mel
filterbank on a frequency axis scaled by ``alpha`` (piecewise linear so the
band edge stays put): formants move as for a longer or shorter vocal tract
while pitch and tempo stay. Speed perturbation cannot make that speaker
change, since it moves all three together. It acts on the features, so it
costs one ``[M, K]`` filterbank per utterance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tokenspeech.audio import resample
from tokenspeech.features import MelConfig, mel_filterbank


@dataclass(frozen=True)
class AugmentOptions:
    """Probabilities and ranges of each augmentation (a probability of 0 disables it)."""

    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    gain_db: tuple[float, float] = (-10.0, 6.0)
    noise_prob: float = 0.4
    snr_db: tuple[float, float] = (5.0, 30.0)
    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.8)
    telephone_prob: float = 0.1
    mulaw_prob: float = 0.5  # of the telephone-band utterances
    freq_masks: int = 2
    freq_mask_width: int = 15  # mel bands
    time_masks_per_second: float = 0.5
    time_mask_width: int = 10  # feature frames (10 ms)
    vtlp_prob: float = 0.0  # off by default: not yet shown to help (docs/asr.md, session 8)
    vtlp_alpha: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        for name in ("noise_prob", "reverb_prob", "telephone_prob", "mulaw_prob", "vtlp_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AugmentOptions.{name} must be in [0, 1]")
        if not self.speeds or min(self.speeds) <= 0:
            raise ValueError("AugmentOptions.speeds must be positive factors")
        if self.snr_db[0] > self.snr_db[1] or self.rt60[0] <= 0 or self.rt60[0] > self.rt60[1]:
            raise ValueError("AugmentOptions: snr_db and rt60 must be (low, high) ranges, rt60 > 0")
        if not 0 < self.vtlp_alpha[0] <= self.vtlp_alpha[1]:
            raise ValueError("AugmentOptions.vtlp_alpha must be a (low, high) range of positive factors")

    @classmethod
    def none(cls) -> AugmentOptions:
        """No augmentation at all (evaluation, tests)."""
        return cls(speeds=(1.0,), gain_db=(0.0, 0.0), noise_prob=0.0, reverb_prob=0.0, telephone_prob=0.0,
                   freq_masks=0, time_masks_per_second=0.0, vtlp_prob=0.0)


def speed_perturb(wav: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch) by resampling ``rate / factor`` -> ``rate``."""
    if factor == 1.0:
        return wav
    return resample(wav, round(rate * factor), rate)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum ``[length]``."""
    from scipy.fft import irfft, next_fast_len, rfft

    size = next_fast_len(max(length, 2), real=True)  # odd lengths make plain FFTs slow
    spectrum = rfft(rng.standard_normal(size))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum), dtype=np.float64), 1.0))
    noise = irfft(spectrum, n=size)[:length]
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def babble_noise(length: int, others: list[np.ndarray], rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Unit-RMS sum of random excerpts of other utterances (tiled to ``length``)."""
    if not others:
        return pink_noise(length, rng)
    mix = np.zeros(length, dtype=np.float64)
    for _ in range(talkers):
        source = others[int(rng.integers(len(others)))]
        tiled = np.resize(source, length + len(source))
        offset = int(rng.integers(len(source)))
        mix += tiled[offset:offset + length] / (np.sqrt(np.mean(source.astype(np.float64) ** 2)) + 1e-9)
    return (mix / (np.sqrt(np.mean(mix ** 2)) + 1e-12)).astype(np.float32)


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wav`` plus unit-RMS ``noise`` scaled to the signal-to-noise ratio ``snr_db``."""
    signal_rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    return (wav + noise * signal_rms * 10 ** (-snr_db / 20)).astype(np.float32)


def synthetic_impulse_response(rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Direct path + exponentially decaying noise tail reaching -60 dB at ``rt60`` seconds."""
    length = int(rate * min(rt60, 1.2))
    times = np.arange(length) / rate
    tail = rng.standard_normal(length) * np.exp(-6.9078 * times / rt60)  # ln(1000) = 60 dB
    predelay = int(rate * rng.uniform(0.002, 0.02))
    tail[:predelay] = 0.0
    response = tail * 0.3 / (np.sqrt(np.sum(tail ** 2)) + 1e-9) * math.sqrt(rt60)
    response[0] = 1.0
    return response.astype(np.float32)


def room_impulse_response(rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A shoebox-room response from pyroomacoustics when installed, else the synthetic one."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        return synthetic_impulse_response(rate, rt60, rng)
    size = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
    absorption, max_order = pra.inverse_sabine(rt60, size)
    room = pra.ShoeBox(size, fs=rate, materials=pra.Material(absorption), max_order=min(max_order, 12))
    room.add_source(rng.uniform(0.5, size - 0.5))
    room.add_microphone(rng.uniform(0.5, size - 0.5))
    room.compute_rir()
    response = np.asarray(room.rir[0][0], dtype=np.float64)
    return (response / (np.abs(response).max() + 1e-9)).astype(np.float32)


def reverberate(wav: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Convolve with ``response`` and keep the original length and RMS level."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(wav, response)[: len(wav)]
    scale = np.sqrt(np.mean(wav.astype(np.float64) ** 2) / (np.mean(wet ** 2) + 1e-12))
    return (wet * scale).astype(np.float32)


def telephone(wav: np.ndarray, rate: int, mulaw: bool) -> np.ndarray:
    """Narrow-band channel: 8 kHz, 300-3400 Hz band-pass, optional 8-bit mu-law, back to ``rate``."""
    from scipy.signal import butter, sosfilt

    narrow = resample(wav, rate, 8000)
    narrow = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos"), narrow)
    if mulaw:
        peak = float(np.abs(narrow).max()) + 1e-9
        x = np.clip(narrow / peak, -1.0, 1.0)
        coded = np.round(np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256) * 127) / 127
        narrow = np.sign(coded) * np.expm1(np.abs(coded) * np.log(256)) / 255 * peak
    return resample(narrow.astype(np.float32), 8000, rate)


class WaveAugmenter:
    """Applies the waveform augmentations of :class:`AugmentOptions` to one utterance."""

    def __init__(self, options: AugmentOptions, rate: int) -> None:
        self.options = options
        self.rate = rate

    def __call__(self, wav: np.ndarray, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
        """``wav [S]`` -> augmented ``[S']`` (speed changes the length); ``others`` feed babble noise."""
        o = self.options
        wav = speed_perturb(wav, float(rng.choice(o.speeds)), self.rate)
        if rng.random() < o.reverb_prob:
            wav = reverberate(wav, room_impulse_response(self.rate, rng.uniform(*o.rt60), rng))
        if rng.random() < o.noise_prob:
            kind = int(rng.integers(3))
            noise = (rng.standard_normal(len(wav)).astype(np.float32) if kind == 0 else
                     pink_noise(len(wav), rng) if kind == 1 else babble_noise(len(wav), others, rng))
            wav = add_noise(wav, noise, rng.uniform(*o.snr_db))
        if rng.random() < o.telephone_prob:
            wav = telephone(wav, self.rate, mulaw=bool(rng.random() < o.mulaw_prob))
        wav = wav * 10 ** (rng.uniform(*o.gain_db) / 20)
        peak = float(np.abs(wav).max()) if wav.size else 0.0
        return (wav / peak * 0.99 if peak > 0.99 else wav).astype(np.float32)


def vtlp_frequencies(bin_hz: np.ndarray, alpha: float, nyquist: float, boundary: float = 0.6) -> np.ndarray:
    """Warped frequency axis: ``f * alpha`` up to a knee, then linear to ``nyquist``.

    The knee sits at ``boundary * nyquist * min(alpha, 1) / alpha`` so the
    warped axis never leaves ``[0, nyquist]`` and stays continuous and
    monotonic (Jaitly & Hinton's piecewise-linear warp).
    """
    knee = boundary * nyquist * min(alpha, 1.0) / alpha
    upper = nyquist - (nyquist - knee * alpha) / (nyquist - knee) * (nyquist - bin_hz)
    return np.where(bin_hz <= knee, bin_hz * alpha, upper)


def vtlp_filterbanks(config: MelConfig, alphas: list[float]) -> Tensor:
    """One warped mel filterbank per utterance, ``[B, M, K]`` float32, for :class:`LogMel`."""
    bin_hz = np.arange(config.n_bins, dtype=np.float64) * config.sample_rate / config.n_fft
    nyquist = config.sample_rate / 2
    return torch.from_numpy(np.stack([mel_filterbank(config, vtlp_frequencies(bin_hz, a, nyquist)) for a in alphas]))


def spec_augment(mel: Tensor, lengths: Tensor, options: AugmentOptions, generator: torch.Generator) -> Tensor:
    """Frequency and time masks on ``mel [B, M, F]`` (masked cells set to each utterance's mean)."""
    batch, bands, _ = mel.shape
    out = mel.clone()
    for row in range(batch):
        length = int(lengths[row])
        fill = out[row, :, :length].mean() if length else out.new_zeros(())
        for _ in range(options.freq_masks):
            width = int(torch.randint(0, options.freq_mask_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, bands - width), (1,), generator=generator))
            out[row, start:start + width, :] = fill
        for _ in range(int(options.time_masks_per_second * length / 100)):
            width = int(torch.randint(0, options.time_mask_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, length - width), (1,), generator=generator))
            out[row, :, start:start + width] = fill
    return out
