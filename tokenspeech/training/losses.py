"""Reconstruction and adversarial losses for codec training.

Shapes: ``wav [B, 1, T]`` float32. Spectra are computed with ``torch.stft``
(training only; nothing here is exported).

- :class:`MultiResolutionSpectralLoss`: at each (n_fft, hop, n_mels)
  resolution, L1 between natural-log mel magnitudes, plus spectral
  convergence and L1 between log magnitudes of the linear spectrum. One STFT
  per resolution and signal serves both terms.
- :func:`hinge_discriminator_loss`, :func:`hinge_generator_loss`,
  :func:`feature_matching_loss`: the usual GAN terms over the logits and
  feature maps of a multi-scale discriminator (e.g.
  ``encodec.msstftd.MultiScaleSTFTDiscriminator``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokenspeech.features import MelConfig, mel_filterbank

LOG_EPS = 1e-5

# (n_fft, hop, n_mels): 16 ms .. 128 ms windows at 16 kHz.
DEFAULT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((256, 64, 32), (512, 128, 64), (1024, 256, 80),
                                                         (2048, 512, 128))


@dataclass
class SpectralLosses:
    """Scalar loss terms, each averaged over the resolutions."""

    mel: Tensor  # L1 of log mel magnitudes
    magnitude: Tensor  # spectral convergence + L1 of log magnitudes


class MultiResolutionSpectralLoss(nn.Module):
    """``(pred [B, 1, T], target [B, 1, T]) -> SpectralLosses``."""

    def __init__(self, sample_rate: int = 16000,
                 resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS) -> None:
        super().__init__()
        self.resolutions = resolutions
        for i, (n_fft, hop, n_mels) in enumerate(resolutions):
            config = MelConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop, n_mels=n_mels)
            self.register_buffer(f"mel_{i}", torch.from_numpy(mel_filterbank(config)), persistent=False)  # [M, K]
            self.register_buffer(f"window_{i}", torch.hann_window(n_fft), persistent=False)

    def _magnitude(self, wav: Tensor, i: int) -> Tensor:
        n_fft, hop, _ = self.resolutions[i]
        spec = torch.stft(wav.squeeze(1), n_fft, hop, window=getattr(self, f"window_{i}"), center=True,
                          return_complex=True)
        return spec.abs().clamp_min(LOG_EPS)  # [B, K, frames]

    def forward(self, pred: Tensor, target: Tensor) -> SpectralLosses:
        mel_total = pred.new_zeros(())
        mag_total = pred.new_zeros(())
        for i in range(len(self.resolutions)):
            p, t = self._magnitude(pred, i), self._magnitude(target, i)
            bank = getattr(self, f"mel_{i}")
            p_mel = torch.matmul(bank, p).clamp_min(LOG_EPS)
            t_mel = torch.matmul(bank, t).clamp_min(LOG_EPS)
            mel_total = mel_total + (p_mel.log() - t_mel.log()).abs().mean()
            convergence = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t).clamp_min(LOG_EPS)
            mag_total = mag_total + convergence + (p.log() - t.log()).abs().mean()
        count = len(self.resolutions)
        return SpectralLosses(mel_total / count, mag_total / count)


def hinge_discriminator_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """Mean over discriminators of ``relu(1 - D(real)) + relu(1 + D(fake))``."""
    total = sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    return total / len(real_logits)


def hinge_generator_loss(fake_logits: list[Tensor]) -> Tensor:
    """Mean over discriminators of ``relu(1 - D(fake))``."""
    return sum(torch.relu(1 - f).mean() for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real_maps: list[list[Tensor]], fake_maps: list[list[Tensor]]) -> Tensor:
    """Relative L1 between discriminator feature maps of real and generated audio."""
    terms = [(r.detach() - f).abs().mean() / r.detach().abs().mean().clamp_min(1e-8)
             for real, fake in zip(real_maps, fake_maps) for r, f in zip(real, fake)]
    return sum(terms) / len(terms)
