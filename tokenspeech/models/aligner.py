"""Phoneme-to-audio alignment: a learned soft aligner and monotonic alignment search.

In the spirit of RAD-TTS / "One TTS Alignment to Rule Them All" (Badlani et
al. 2021): a phoneme encoder and a mel encoder embed both sequences; the
soft alignment of mel frame ``t`` over phonemes is a softmax of negative
squared distances, multiplied by a static beta-binomial prior that favours
the diagonal (it makes the aligner converge in a few hundred CPU steps). The
forward-sum loss is the CTC loss of "every phoneme in order, each at least
once" over that distribution; hard durations come from the most likely
monotonic path (Viterbi, :func:`monotonic_alignment`).

Axes: B batch, N phonemes, T mel frames (100 Hz), M mel bands, A attention dim.

Durations at 100 Hz give every phoneme at least one mel frame; the TTS model
works at the codec's 25 Hz, where :func:`durations_to_frames` rounds the
cumulative sums (so a phoneme may get 0 frames, and the total is exact).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaln, gammaln
from torch import Tensor, nn

from tokenspeech.errors import ConfigError


@dataclass(frozen=True)
class AlignerConfig:
    """Dimensions of the aligner; saved with its checkpoint."""

    num_phonemes: int
    n_mels: int = 80
    text_dim: int = 128
    mel_dim: int = 128
    attention_dim: int = 80
    temperature: float = 0.0005
    prior_scale: float = 1.0  # beta-binomial prior sharpness (RAD-TTS' scaling_factor)
    blank_logprob: float = -1.0  # CTC blank score in the forward-sum loss

    def __post_init__(self) -> None:
        for name in ("num_phonemes", "n_mels", "text_dim", "mel_dim", "attention_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"AlignerConfig.{name} must be >= 1, got {getattr(self, name)}")

    def to_json(self) -> dict:
        return asdict(self)


class Aligner(nn.Module):
    """Soft alignment ``log p(phoneme n | mel frame t)`` of a batch, prior included."""

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.embedding = nn.Embedding(c.num_phonemes, c.text_dim)
        self.text = nn.Sequential(nn.Conv1d(c.text_dim, 2 * c.text_dim, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(2 * c.text_dim, c.attention_dim, 1))
        self.mel = nn.Sequential(nn.Conv1d(c.n_mels, 2 * c.mel_dim, 3, padding=1), nn.ReLU(),
                                 nn.Conv1d(2 * c.mel_dim, c.mel_dim, 1), nn.ReLU(),
                                 nn.Conv1d(c.mel_dim, c.attention_dim, 1))
        # Global mel normalisation, set from data before training (see set_mel_statistics).
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))

    def set_mel_statistics(self, mel: Tensor, lengths: Tensor) -> None:
        """Per-band mean/std of ``mel [B, M, T]`` over valid frames."""
        valid = (torch.arange(mel.shape[2])[None, :] < lengths[:, None]).to(mel.dtype)[:, None, :]
        count = valid.sum().clamp_min(1.0)
        mean = (mel * valid).sum(dim=(0, 2)) / count
        var = (((mel - mean[None, :, None]) ** 2) * valid).sum(dim=(0, 2)) / count
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(var.sqrt().clamp_min(1e-3))

    def forward(self, phonemes: Tensor, phoneme_lengths: Tensor, mel: Tensor, mel_lengths: Tensor) -> Tensor:
        """``phonemes [B, N]``, ``mel [B, M, T]`` -> log alignment ``[B, T, N]`` (padded keys/frames = -inf / 0).

        Each valid row ``t`` is a log-distribution over the item's ``N_b``
        phonemes (softmax of distances, times the prior, renormalised).
        """
        keys = self.text(self.embedding(phonemes).transpose(1, 2))  # [B, A, N]
        queries = self.mel((mel - self.mel_mean[None, :, None]) / self.mel_std[None, :, None])  # [B, A, T]
        # |q - k|^2 = |q|^2 - 2 q.k + |k|^2, without materialising [B, A, T, N]
        distance = (queries.pow(2).sum(dim=1)[:, :, None] - 2 * torch.einsum("bat,ban->btn", queries, keys)
                    + keys.pow(2).sum(dim=1)[:, None, :]).clamp_min(0.0)  # [B, T, N]
        scores = -self.config.temperature * distance
        key_mask = torch.arange(phonemes.shape[1], device=phonemes.device)[None, :] < phoneme_lengths[:, None]
        scores = scores.masked_fill(~key_mask[:, None, :], -1e9)
        prior = batch_prior(phoneme_lengths, mel_lengths, phonemes.shape[1], mel.shape[2], self.config.prior_scale)
        log_attention = F.log_softmax(scores, dim=-1) + prior.to(scores.device)
        log_attention = log_attention.masked_fill(~key_mask[:, None, :], -1e9)
        return F.log_softmax(log_attention, dim=-1)


def beta_binomial_prior(phonemes: int, frames: int, scale: float = 1.0) -> np.ndarray:
    """``[frames, phonemes]`` log prior: row ``t`` is BetaBinomial(N-1, scale(t+1), scale(T-t)) over ``n``.

    Its mode moves along the diagonal, so early frames prefer early phonemes.
    """
    n = phonemes - 1
    k = np.arange(phonemes, dtype=np.float64)[None, :]
    t = np.arange(1, frames + 1, dtype=np.float64)[:, None]
    a, b = scale * t, scale * (frames + 1 - t)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return (log_choose + betaln(k + a, n - k + b) - betaln(a, b)).astype(np.float32)


def batch_prior(phoneme_lengths: Tensor, mel_lengths: Tensor, max_phonemes: int, max_frames: int,
                scale: float) -> Tensor:
    """Padded log priors ``[B, T, N]`` (0 outside each item's valid region)."""
    prior = np.zeros((len(phoneme_lengths), max_frames, max_phonemes), dtype=np.float32)
    for row, (n, t) in enumerate(zip(phoneme_lengths.tolist(), mel_lengths.tolist())):
        prior[row, :t, :n] = beta_binomial_prior(n, t, scale)
    return torch.from_numpy(prior)


def forward_sum_loss(log_attention: Tensor, phoneme_lengths: Tensor, mel_lengths: Tensor,
                     blank_logprob: float = -1.0) -> Tensor:
    """CTC loss of "phonemes 1..N in order" over the soft alignment ``[B, T, N]``, mean per item.

    A blank column with constant score ``blank_logprob`` is prepended (class
    0), as in RAD-TTS; the loss is normalised by each item's phoneme count.
    """
    batch, _, phonemes = log_attention.shape
    padded = F.pad(log_attention, (1, 0), value=blank_logprob)  # [B, T, N + 1]
    key_mask = torch.arange(phonemes + 1, device=padded.device)[None, :] <= phoneme_lengths[:, None]
    padded = padded.masked_fill(~key_mask[:, None, :], -1e9)
    log_probs = F.log_softmax(padded, dim=-1).transpose(0, 1)  # [T, B, N + 1]
    targets = torch.arange(1, phonemes + 1, device=padded.device)[None, :].expand(batch, -1)
    loss = F.ctc_loss(log_probs, targets, mel_lengths, phoneme_lengths, blank=0, reduction="none",
                      zero_infinity=True)
    return (loss / phoneme_lengths.clamp_min(1).to(loss.dtype)).mean()


def monotonic_alignment(log_probs: np.ndarray) -> np.ndarray:
    """Durations ``[N] int64`` of the best monotonic path through ``log_probs [T, N]``.

    The path starts at (0, 0), ends at (T-1, N-1), and at each frame stays on
    a phoneme or moves to the next one, so every phoneme gets >= 1 frame and
    the durations sum to ``T``. Raises :class:`ConfigError` if ``T < N``.
    """
    frames, phonemes = log_probs.shape
    if frames < phonemes or phonemes == 0:
        raise ConfigError(f"cannot align {phonemes} phonemes to {frames} frames (need 1 <= N <= T)")
    scores = np.full(phonemes, -np.inf)
    scores[0] = log_probs[0, 0]
    moved = np.zeros((frames, phonemes), dtype=bool)
    for t in range(1, frames):
        shifted = np.concatenate([[-np.inf], scores[:-1]])
        moved[t] = shifted > scores
        scores = np.maximum(scores, shifted) + log_probs[t]
    durations = np.zeros(phonemes, dtype=np.int64)
    n = phonemes - 1
    for t in range(frames - 1, -1, -1):
        durations[n] += 1
        if t > 0 and moved[t, n]:
            n -= 1
    return durations


def durations_to_frames(durations: np.ndarray, total_frames: int) -> np.ndarray:
    """Rescale durations ``[N]`` (e.g. 100 Hz mel frames) to sum to ``total_frames`` (e.g. 25 Hz codec frames).

    The cumulative sums are scaled and rounded, so each boundary lands on the
    nearest frame and the total is exact; short phonemes may get 0 frames.
    """
    durations = np.asarray(durations, dtype=np.float64)
    total = durations.sum()
    if total <= 0:
        raise ConfigError("durations must have a positive sum")
    ends = np.rint(np.cumsum(durations) * (total_frames / total)).astype(np.int64)
    ends[-1] = total_frames
    return np.diff(ends, prepend=0)
