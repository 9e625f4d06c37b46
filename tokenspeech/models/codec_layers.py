"""Causal building blocks of tscodec (:mod:`tokenspeech.models.codec`): convolutions, ConvNeXt, spectra.

Every layer is left-padded (no lookahead) and exposes ``forward`` (offline,
from the zero state) and ``step(x, state) -> (y, state)`` with its input
history as the state; both give the same output chunk after chunk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tokenspeech.errors import ConfigError

LOG_POWER_FLOOR = 1e-6  # encoder input: log(|X|^2 + floor)
INPUT_SCALE = 0.1  # brings log power (about -14..10) near unit range
LOG_MAGNITUDE_MAX = 6.0  # decoder head: exp() argument is clipped here (magnitude <= ~400)


def _with_history(x: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
    """``cat(history, x)`` along time and the new history (same length as the old one)."""
    full = torch.cat([history, x], dim=-1)
    return full, full[..., -history.shape[-1]:]


class CausalConv1d(nn.Module):
    """``x [B, C_in, T] -> y [B, C_out, T // stride]`` without lookahead.

    Left-padded by ``kernel_size - stride``: output ``t`` sees inputs up to
    ``t * stride + stride - 1``. The streaming state is the last
    ``kernel_size - stride`` inputs ``[B, C_in, kernel_size - stride]``;
    chunks must be multiples of ``stride``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size <= stride:
            raise ConfigError(f"CausalConv1d needs kernel_size > stride, got {kernel_size} <= {stride}")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
        self.history = kernel_size - stride

    def init_state(self, batch_size: int) -> Tensor:
        weight = self.conv.weight
        return weight.new_zeros(batch_size, self.conv.in_channels, self.history)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.history, 0)))

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        full, state = _with_history(x, state)
        return self.conv(full), state


class CausalConvNeXtBlock(nn.Module):
    """ConvNeXt block on ``x [B, S, C] -> [B, S, C]`` with a causal depthwise conv.

    depthwise causal conv -> LayerNorm -> Linear(C, r C) -> GELU -> Linear(r C, C)
    -> per-channel scale -> residual. Only the depthwise conv looks across time.
    """

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, kernel_size, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def _mix(self, x: Tensor, mixed: Tensor) -> Tensor:
        return x + self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(mixed))))

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x, self.dwconv(x.transpose(1, 2)).transpose(1, 2))

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        mixed, state = self.dwconv.step(x.transpose(1, 2), state)
        return self._mix(x, mixed.transpose(1, 2)), state


class CausalConvNeXtStack(nn.Module):
    """``blocks`` causal ConvNeXt blocks ``[B, S, C] -> [B, S, C]``; state: one history per block."""

    def __init__(self, dim: int, blocks: int, kernel_size: int, mlp_ratio: int) -> None:
        super().__init__()
        scale = 1.0 / max(blocks, 1)
        self.blocks = nn.ModuleList(CausalConvNeXtBlock(dim, kernel_size, mlp_ratio, scale) for _ in range(blocks))

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return tuple(block.dwconv.init_state(batch_size) for block in self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        new_state = []
        for block, history in zip(self.blocks, state):
            x, history = block.step(x, history)
            new_state.append(history)
        return x, tuple(new_state)


def _hann(length: int) -> Tensor:
    """Periodic Hann window ``[length]`` (float64)."""
    n = torch.arange(length, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2 * math.pi * n / length)


def analysis_kernels(n_fft: int) -> Tensor:
    """Hann-windowed real DFT as conv kernels ``[2N, 1, n_fft]``: real parts, then imaginary parts."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / n_fft
    window = _hann(n_fft)
    kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window], dim=0)
    return kernels.unsqueeze(1).float()


def synthesis_kernels(n_fft: int, hop: int) -> Tensor:
    """Inverse real DFT times a Hann window, as ``conv_transpose1d`` weights ``[2N, 1, n_fft]``.

    Input channels are real parts then imaginary parts of ``N`` bins; the
    window is divided by its overlap-add sum at ``hop`` (constant for Hann
    when ``n_fft`` is a multiple of ``hop``), so in steady state a constant
    spectrum gives unit-gain frames.
    """
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / n_fft
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    weight[-1] = 1.0  # n_fft is even: the Nyquist bin appears once
    window = _hann(n_fft)
    window = window / (window.sum() / hop)
    real = weight * torch.cos(angle) / n_fft * window
    imag = -weight * torch.sin(angle) / n_fft * window
    return torch.cat([real, imag], dim=0).unsqueeze(1).float()


class CausalSpectrum(nn.Module):
    """``wav [B, 1, T] -> scaled log power [B, S, N]``, ``S = T // hop``.

    Sub-frame ``s`` is the Hann-windowed DFT of samples
    ``[s hop - (n_fft - hop), (s + 1) hop)`` (zeros before the start).
    State: the last ``n_fft - hop`` samples ``[B, 1, n_fft - hop]``.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.hop = hop
        self.history = n_fft - hop
        self.register_buffer("kernels", analysis_kernels(n_fft), persistent=False)

    def init_state(self, batch_size: int) -> Tensor:
        return self.kernels.new_zeros(batch_size, 1, self.history)

    def _features(self, padded: Tensor) -> Tensor:
        spectrum = F.conv1d(padded, self.kernels, stride=self.hop)  # [B, 2N, S]
        real, imag = spectrum.chunk(2, dim=1)
        power = real * real + imag * imag
        return (INPUT_SCALE * torch.log(power + LOG_POWER_FLOOR)).transpose(1, 2)

    def forward(self, wav: Tensor) -> Tensor:
        return self._features(F.pad(wav, (self.history, 0)))

    def step(self, wav: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        full, state = _with_history(wav, state)
        return self._features(full), state


class IstftHead(nn.Module):
    """``h [B, S, C] -> wav [B, 1, S * hop]`` via log-magnitude + phase and overlap-add.

    The inverse DFT, synthesis window and overlap-add are one
    ``conv_transpose1d`` with fixed kernels (exports to ONNX ``ConvTranspose``).
    A window of sub-frame ``s`` covers output samples ``[s hop, s hop + n_fft)``;
    a step emits the first ``S * hop`` samples and keeps the
    ``n_fft - hop`` tail in its state ``[B, 1, n_fft - hop]``.
    """

    def __init__(self, dim: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.hop = hop
        self.tail = n_fft - hop
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, 2 * (n_fft // 2 + 1))
        self.register_buffer("kernels", synthesis_kernels(n_fft, hop), persistent=False)

    def init_state(self, batch_size: int) -> Tensor:
        return self.kernels.new_zeros(batch_size, 1, self.tail)

    def spectrum(self, h: Tensor) -> Tensor:
        """``h [B, S, C] -> [B, 2N, S]`` real parts then imaginary parts of each sub-frame."""
        log_magnitude, phase = self.proj(self.norm(h)).chunk(2, dim=-1)
        magnitude = torch.exp(torch.clamp(log_magnitude, max=LOG_MAGNITUDE_MAX))
        return torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1).transpose(1, 2)

    def forward(self, h: Tensor) -> Tensor:
        return self.step(h, self.init_state(h.shape[0]))[0]

    def step(self, h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        signal = F.conv_transpose1d(self.spectrum(h), self.kernels, stride=self.hop)  # [B, 1, S hop + tail]
        head = signal[..., :self.tail] + state
        signal = torch.cat([head, signal[..., self.tail:]], dim=-1)
        return signal[..., :-self.tail], signal[..., -self.tail:]
