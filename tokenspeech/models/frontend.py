"""PyTorch log-mel front-end, exportable to ONNX as plain Conv/MatMul ops.

The weights come from :mod:`tokenspeech.features` (``dft_basis``,
``mel_filterbank``), so this module computes exactly the numpy definition
documented there; only the arithmetic backend differs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tokenspeech.features import MelConfig, dft_basis, mel_filterbank


class LogMel(nn.Module):
    """Log-mel features ``wav [B, T] float32 -> [B, M, F]``.

    The windowed DFT is a strided ``conv1d`` whose ``2K`` kernels (real parts,
    then imaginary parts) span one frame of ``win_length`` samples, not
    ``torch.stft``, so an ONNX export has only Conv, Mul/Add, MatMul, Clip
    and Log nodes and keeps the batch and time axes dynamic.
    ``F = config.num_frames(T)``; inputs shorter than one window give ``F = 0``
    in eager mode.
    """

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        real, imag = dft_basis(config)  # [K, W] each
        kernels = torch.cat([torch.from_numpy(real), torch.from_numpy(imag)], dim=0)
        self.register_buffer("dft_kernels", kernels.unsqueeze(1), persistent=False)  # [2K, 1, W]
        self.register_buffer(
            "mel_weights", torch.from_numpy(mel_filterbank(config)), persistent=False
        )  # [M, K]

    def forward(self, wav: torch.Tensor, mel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """``wav [B, T]`` -> natural-log mel power ``[B, M, F]``.

        ``mel_weights [B, M, K]`` replaces the filterbank per utterance (training
        augmentation: vocal-tract-length perturbation); inference never passes it.
        """
        if wav.dim() != 2:
            raise ValueError(f"LogMel expects wav [B, T], got shape {tuple(wav.shape)}")
        if not torch.jit.is_tracing() and wav.shape[-1] < self.config.win_length:
            return wav.new_zeros(wav.shape[0], self.config.n_mels, 0)
        spectrum = F.conv1d(wav.unsqueeze(1), self.dft_kernels, stride=self.config.hop_length)
        n_bins = self.config.n_bins
        real, imag = spectrum[:, :n_bins], spectrum[:, n_bins:]  # [B, K, F] each
        power = real * real + imag * imag
        weights = self.mel_weights if mel_weights is None else mel_weights
        mel = torch.matmul(weights, power)  # [M, K] or [B, M, K] @ [B, K, F] -> [B, M, F]
        return torch.log(torch.clamp(mel, min=self.config.log_floor))
