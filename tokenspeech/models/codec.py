"""tscodec: our streaming low-bitrate neural audio codec (nn.Modules only, no I/O).

Axis glossary: ``B`` batch, ``T`` samples, ``S`` sub-frames (hop ``sub_hop``,
100 Hz), ``F`` code frames (hop ``hop_length``, 25 Hz), ``K`` codebooks, ``V``
codebook size, ``C`` channels, ``D`` latent dim, ``N = n_fft // 2 + 1`` bins,
``R = n_fft // sub_hop`` sub-frames one synthesis window spans.

Signal path (defaults of :class:`CodecConfig`)::

    wav [B,1,T] -> causal log-power spectrum (window 640, hop 160)  [B,S,321]
      -> Linear -> causal ConvNeXt x2 @100 Hz (C=128)
      -> stack 4 sub-frames -> Linear -> causal ConvNeXt x4 @25 Hz (C=256)
      -> Linear + LayerNorm (no affine: fixed-scale latents) -> latent [B,F,128]
      -> RVQ (24 x 1024 EMA codebooks; first k used for a lower bitrate) -> codes [B,K,F]
      -> Linear -> causal ConvNeXt x8 @25 Hz (C=320) -> Linear to 4 sub-frames -> ConvNeXt x2 @100 Hz
      -> ISTFT head: log-magnitude + phase per sub-frame, inverse real DFT with a Hann
         synthesis window and overlap-add, both in one ``conv_transpose1d`` (n_fft 640, hop 160)
      -> wav [B,1,F*640]

Every convolution is left-padded (no lookahead) and carries its history in an
explicit state; LayerNorm and Linear act per time step. ``forward`` is the
offline pass and equals ``step`` run from the zero state, chunk after chunk.

Latency arithmetic (defaults; 1 sample = 1/16 ms):

- Encoder: code frame ``f`` depends on input samples ``< 640 (f + 1)``; it can
  only be computed once the whole 640-sample frame has arrived: 40 ms.
- Decoder: frame ``f`` yields sub-frames ``s = 4f .. 4f+3``; the synthesis
  window of sub-frame ``s`` covers output samples ``[160 s, 160 s + 640)``.
  After frame ``f`` no later window touches output samples ``< 640 (f + 1)``,
  so ``decode_step`` emits exactly those 640 samples and keeps the
  ``640 - 160 = 480``-sample overlap tail in its state.
- The model is trained to make output sample ``n`` reproduce input sample
  ``n - 480`` (:attr:`CodecConfig.output_delay`): the last window of frame
  ``f`` then ends exactly at the input frame's end, so no window extrapolates
  into the future.
- Total: the chunk emitted for frame ``f`` reproduces input samples
  ``[640 f - 480, 640 f + 160)`` and is ready once input sample
  ``640 f + 639`` has arrived, so its oldest sample has waited
  640 + 480 = 1120 samples = 40 ms (frame) + 30 ms (ISTFT overlap) = 70 ms
  <= 80 ms: the algorithmic latency, before compute time. Steps of several
  frames add 40 ms per extra frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tokenspeech.errors import ConfigError

LOG_POWER_FLOOR = 1e-6  # encoder input: log(|X|^2 + floor)
INPUT_SCALE = 0.1  # brings log power (about -14..10) near unit range
LOG_MAGNITUDE_MAX = 6.0  # decoder head: exp() argument is clipped here (magnitude <= ~400)


@dataclass(frozen=True)
class CodecConfig:
    """Every dimension of a tscodec model; saved in its model card.

    ``hop_length`` is the code-frame hop (samples per frame), ``sub_hop`` the
    hop of the encoder's analysis spectrum and of the decoder's ISTFT head,
    ``n_fft`` the window length of both (a multiple of ``sub_hop``).
    """

    sample_rate: int = 16000
    hop_length: int = 640
    sub_hop: int = 160
    n_fft: int = 640
    encoder_fine_dim: int = 128
    encoder_fine_blocks: int = 2
    encoder_dim: int = 256
    encoder_blocks: int = 4
    latent_dim: int = 128
    num_codebooks: int = 24
    codebook_size: int = 1024
    decoder_dim: int = 320
    decoder_blocks: int = 8
    decoder_fine_dim: int = 128
    decoder_fine_blocks: int = 2
    kernel_size: int = 7
    mlp_ratio: int = 3
    ema_decay: float = 0.99
    dead_code_patience: float = 8.0
    kmeans_iterations: int = 10

    def __post_init__(self) -> None:
        ints = ("sample_rate", "hop_length", "sub_hop", "n_fft", "encoder_fine_dim", "encoder_dim", "latent_dim",
                "num_codebooks", "codebook_size", "decoder_dim", "decoder_fine_dim", "kernel_size", "mlp_ratio")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"CodecConfig.{name} must be a positive integer, got {value!r}")
        for name in ("encoder_fine_blocks", "encoder_blocks", "decoder_blocks", "decoder_fine_blocks",
                     "kmeans_iterations"):
            if getattr(self, name) < 0:
                raise ConfigError(f"CodecConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.hop_length % self.sub_hop:
            raise ConfigError(f"CodecConfig: hop_length ({self.hop_length}) must be a multiple of sub_hop "
                              f"({self.sub_hop})")
        if self.n_fft % self.sub_hop or self.n_fft <= self.sub_hop or self.n_fft % 2:
            raise ConfigError(f"CodecConfig: n_fft ({self.n_fft}) must be even, larger than sub_hop "
                              f"({self.sub_hop}) and a multiple of it")
        if self.kernel_size < 2:
            raise ConfigError(f"CodecConfig.kernel_size must be >= 2, got {self.kernel_size}")
        if not self.dead_code_patience > 0:
            raise ConfigError(f"CodecConfig.dead_code_patience must be > 0, got {self.dead_code_patience}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"CodecConfig.ema_decay must be in (0, 1), got {self.ema_decay}")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def subframes(self) -> int:
        """Sub-frames per code frame (4 by default)."""
        return self.hop_length // self.sub_hop

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def output_delay(self) -> int:
        """Output sample ``n`` reconstructs input sample ``n - output_delay`` (the ISTFT overlap)."""
        return self.n_fft - self.sub_hop

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: one code frame plus the ISTFT overlap."""
        return self.hop_length + self.output_delay

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"CodecConfig: unknown fields {unknown}; this tokenspeech knows {sorted(known)}")
        return cls(**data)


# ----------------------------------------------------------------------------- streaming state


@dataclass
class EncoderState:
    """Streaming state of :class:`CodecEncoder` (all tensors are input histories)."""

    analysis: Tensor  # [B, 1, n_fft - sub_hop] last input samples
    fine: tuple[Tensor, ...]  # per 100 Hz block: [B, encoder_fine_dim, kernel_size - 1]
    coarse: tuple[Tensor, ...]  # per 25 Hz block: [B, encoder_dim, kernel_size - 1]


@dataclass
class DecoderState:
    """Streaming state of :class:`CodecDecoder`."""

    coarse: tuple[Tensor, ...]  # per 25 Hz block: [B, decoder_dim, kernel_size - 1]
    fine: tuple[Tensor, ...]  # per 100 Hz block: [B, decoder_fine_dim, kernel_size - 1]
    overlap: Tensor  # [B, 1, n_fft - sub_hop] overlap-add tail not yet emitted


def flatten_state(state: EncoderState | DecoderState) -> list[tuple[str, Tensor]]:
    """``[(name, tensor), ...]`` in a fixed order: ``analysis``, ``fine.0``, ``fine.1``, ...

    The order and names are what the ONNX step graphs use for their state inputs/outputs.
    """
    named: list[tuple[str, Tensor]] = []
    for field in fields(state):
        value = getattr(state, field.name)
        if isinstance(value, tuple):
            named.extend((f"{field.name}.{i}", tensor) for i, tensor in enumerate(value))
        else:
            named.append((field.name, value))
    return named


def unflatten_state(template: EncoderState | DecoderState, tensors: Sequence[Tensor]) -> Any:
    """Rebuild a state shaped like ``template`` from tensors in :func:`flatten_state` order."""
    values: dict[str, Any] = {}
    position = 0
    for field in fields(template):
        current = getattr(template, field.name)
        if isinstance(current, tuple):
            values[field.name] = tuple(tensors[position:position + len(current)])
            position += len(current)
        else:
            values[field.name] = tensors[position]
            position += 1
    if position != len(tensors):
        raise ValueError(f"{type(template).__name__} takes {position} tensors, got {len(tensors)}")
    return type(template)(**values)


# ----------------------------------------------------------------------------- layers


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


def _stack_subframes(x: Tensor, subframes: int) -> Tensor:
    """``[B, S, C] -> [B, S / subframes, subframes * C]`` (a view; S must be a multiple)."""
    return x.reshape(x.shape[0], -1, subframes * x.shape[2])


def _split_subframes(x: Tensor, subframes: int) -> Tensor:
    """``[B, F, subframes * C] -> [B, F * subframes, C]`` (a view)."""
    return x.reshape(x.shape[0], -1, x.shape[2] // subframes)


# ----------------------------------------------------------------------------- encoder / decoder


class CodecEncoder(nn.Module):
    """``wav [B, 1, T] -> latent [B, F, D]`` with ``T = F * hop_length``; causal."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        c = config
        self.subframes = c.subframes
        self.hop_length = c.hop_length
        self.spectrum = CausalSpectrum(c.n_fft, c.sub_hop)
        self.fine_in = nn.Linear(c.n_bins, c.encoder_fine_dim)
        self.fine = CausalConvNeXtStack(c.encoder_fine_dim, c.encoder_fine_blocks, c.kernel_size, c.mlp_ratio)
        self.down = nn.Linear(c.subframes * c.encoder_fine_dim, c.encoder_dim)
        self.coarse = CausalConvNeXtStack(c.encoder_dim, c.encoder_blocks, c.kernel_size, c.mlp_ratio)
        self.norm = nn.LayerNorm(c.encoder_dim, eps=1e-6)
        self.out = nn.Linear(c.encoder_dim, c.latent_dim)
        # Fixed-scale latents: the encoder cannot drift away from the codebooks by shrinking or growing.
        self.latent_norm = nn.LayerNorm(c.latent_dim, eps=1e-6, elementwise_affine=False)

    def init_state(self, batch_size: int) -> EncoderState:
        return EncoderState(self.spectrum.init_state(batch_size), self.fine.init_state(batch_size),
                            self.coarse.init_state(batch_size))

    def _check(self, wav: Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"CodecEncoder expects wav [B, 1, T], got shape {tuple(wav.shape)}")
        if not torch.jit.is_tracing() and wav.shape[-1] % self.hop_length:
            raise ValueError(f"CodecEncoder needs T to be a multiple of {self.hop_length} samples, "
                             f"got {wav.shape[-1]}")

    def forward(self, wav: Tensor) -> Tensor:
        self._check(wav)
        x = self.fine(self.fine_in(self.spectrum(wav)))
        x = self.coarse(self.down(_stack_subframes(x, self.subframes)))
        return self.latent_norm(self.out(self.norm(x)))

    def step(self, wav: Tensor, state: EncoderState) -> tuple[Tensor, EncoderState]:
        self._check(wav)
        x, analysis = self.spectrum.step(wav, state.analysis)
        x, fine = self.fine.step(self.fine_in(x), state.fine)
        x, coarse = self.coarse.step(self.down(_stack_subframes(x, self.subframes)), state.coarse)
        return self.latent_norm(self.out(self.norm(x))), EncoderState(analysis, fine, coarse)


class CodecDecoder(nn.Module):
    """``latent [B, F, D] -> wav [B, 1, F * hop_length]``; causal, output delayed by ``output_delay``."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        c = config
        self.subframes = c.subframes
        self.inp = nn.Linear(c.latent_dim, c.decoder_dim)
        self.coarse = CausalConvNeXtStack(c.decoder_dim, c.decoder_blocks, c.kernel_size, c.mlp_ratio)
        self.up_norm = nn.LayerNorm(c.decoder_dim, eps=1e-6)
        self.up = nn.Linear(c.decoder_dim, c.subframes * c.decoder_fine_dim)
        self.fine = CausalConvNeXtStack(c.decoder_fine_dim, c.decoder_fine_blocks, c.kernel_size, c.mlp_ratio)
        self.head = IstftHead(c.decoder_fine_dim, c.n_fft, c.sub_hop)

    def init_state(self, batch_size: int) -> DecoderState:
        return DecoderState(self.coarse.init_state(batch_size), self.fine.init_state(batch_size),
                            self.head.init_state(batch_size))

    def _upsample(self, x: Tensor) -> Tensor:
        return _split_subframes(self.up(self.up_norm(x)), self.subframes)

    def forward(self, latent: Tensor) -> Tensor:
        x = self.coarse(self.inp(latent))
        return self.head(self.fine(self._upsample(x)))

    def step(self, latent: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        x, coarse = self.coarse.step(self.inp(latent), state.coarse)
        x, fine = self.fine.step(self._upsample(x), state.fine)
        wav, overlap = self.head.step(x, state.overlap)
        return wav, DecoderState(coarse, fine, overlap)


# ----------------------------------------------------------------------------- quantizer


@dataclass
class QuantizerOutput:
    """Result of a training/analysis pass of :class:`ResidualVectorQuantizer`."""

    quantized: Tensor  # [B, F, D] straight-through sum of each item's active codebooks
    codes: Tensor  # [B, K, F] int64, all K stages (inactive ones included)
    commitment: Tensor  # scalar: mean squared distance of residuals to their codewords (active stages)
    perplexity: Tensor  # [K] exp(entropy) of each stage's code histogram in this batch
    replaced: int  # dead codes replaced in this pass


def kmeans(vectors: Tensor, clusters: int, iterations: int) -> Tensor:
    """Lloyd's k-means ``[N, D] -> centroids [clusters, D]``; seeds are random samples (plus jitter).

    Fewer vectors than clusters is allowed: seeds are then drawn with
    replacement and jittered, and clusters left empty keep their seed.
    """
    count = vectors.shape[0]
    picks = torch.randperm(count)[:clusters] if count >= clusters else torch.randint(count, (clusters,))
    centroids = vectors[picks].clone()
    jitter = 1e-3 * vectors.std().clamp_min(1e-8)
    centroids += jitter * torch.randn_like(centroids)
    for _ in range(iterations):
        assign = _nearest(vectors, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        sizes = torch.bincount(assign, minlength=clusters).to(vectors.dtype)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    return centroids


def _nearest(vectors: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codeword: ``vectors [..., D]``, ``codebook [V, D] -> [...]`` int64."""
    distance = (codebook * codebook).sum(-1) - 2 * torch.matmul(vectors, codebook.t())
    return distance.argmin(dim=-1)


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ with ``K`` EMA codebooks of ``V`` codewords of dim ``D``.

    Training (``forward`` in train mode): codebooks are initialised by k-means
    on the first batch's latents (stage by stage, on the residuals), then
    follow exponential moving averages of their assigned vectors. A codeword
    not chosen while its codebook quantised ``dead_code_patience * V``
    vectors (a uniformly used one would have been chosen that many times) is
    replaced by a random residual from the current batch. Each batch item uses
    its own number of codebooks (quantizer dropout); EMA statistics only count
    the stages an item uses.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float = 0.99,
                 dead_code_patience: float = 8.0, kmeans_iterations: int = 10) -> None:
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.dead_code_patience = dead_code_patience
        self.kmeans_iterations = kmeans_iterations
        self.register_buffer("codebooks", torch.zeros(num_codebooks, codebook_size, dim))
        self.register_buffer("cluster_size", torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("embed_sum", torch.zeros(num_codebooks, codebook_size, dim))
        # Vectors this codebook quantised since each codeword was last chosen.
        self.register_buffer("idle", torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def encode(self, latent: Tensor, num_codebooks: int | None = None) -> Tensor:
        """``latent [B, F, D] -> codes [B, n, F]`` int64, greedy residual search over the first ``n``."""
        n = self.num_codebooks if num_codebooks is None else num_codebooks
        if not 1 <= n <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be in 1..{self.num_codebooks}, got {n}")
        residual = latent
        codes = []
        for k in range(n):
            index = _nearest(residual, self.codebooks[k])  # [B, F]
            residual = residual - F.embedding(index, self.codebooks[k])
            codes.append(index)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, k, F]`` (any ``k <= K``) ``-> latent [B, F, D]``: sum of the codewords.

        One gather from the flattened ``[K V, D]`` table, so ``k`` stays a
        dynamic axis in an ONNX export.
        """
        offsets = torch.arange(codes.shape[1], device=codes.device) * self.codebook_size
        table = self.codebooks.reshape(-1, self.dim)
        return F.embedding(codes + offsets[None, :, None], table).sum(dim=1)

    def forward(self, latent: Tensor, active: Tensor) -> QuantizerOutput:
        """``latent [B, F, D]``, ``active [B]`` codebooks per item (1..K) -> :class:`QuantizerOutput`."""
        if self.training and not bool(self.initialized):
            self._initialise(latent.detach())
        _, frames, dim = latent.shape
        use = (torch.arange(self.num_codebooks, device=latent.device)[None, :] < active[:, None]).to(latent.dtype)
        residual = latent.detach()
        total = torch.zeros_like(residual)
        commitment = latent.new_zeros(())
        codes, perplexity, replaced = [], [], 0
        for k in range(self.num_codebooks):
            index = _nearest(residual, self.codebooks[k])  # [B, F]
            chosen = F.embedding(index, self.codebooks[k])
            weight = use[:, k, None, None]  # [B, 1, 1]
            live = latent - total  # grad flows to the encoder; earlier codewords are constants
            commitment = commitment + ((live - chosen).pow(2) * weight).sum() / (use.sum() * frames * dim)
            if self.training:
                replaced += self._update(k, residual, index, weight)
            perplexity.append(_perplexity(index, weight, self.codebook_size))
            total = total + chosen * weight
            residual = residual - chosen
            codes.append(index)
        quantized = latent + (total - latent).detach()
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), commitment, torch.stack(perplexity), replaced)

    @torch.no_grad()
    def _initialise(self, latent: Tensor) -> None:
        vectors = latent.reshape(-1, self.dim)
        share = vectors.shape[0] / self.codebook_size
        for k in range(self.num_codebooks):
            centroids = kmeans(vectors, self.codebook_size, self.kmeans_iterations)
            self.codebooks[k] = centroids
            self.cluster_size[k] = share
            self.embed_sum[k] = centroids * share
            vectors = vectors - centroids[_nearest(vectors, centroids)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, k: int, residual: Tensor, index: Tensor, weight: Tensor) -> int:
        """EMA step of codebook ``k`` on the items that use it; returns the dead codes replaced."""
        mask = weight.expand(-1, residual.shape[1], 1).reshape(-1) > 0  # [B F]
        vectors = residual.reshape(-1, self.dim)[mask]
        if vectors.shape[0] == 0:
            return 0
        assigned = index.reshape(-1)[mask]
        counts = torch.bincount(assigned, minlength=self.codebook_size).to(vectors.dtype)
        sums = torch.zeros_like(self.embed_sum[k]).index_add_(0, assigned, vectors)
        self.cluster_size[k].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum[k].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        size = self.cluster_size[k]
        total = size.sum()
        smoothed = (size + 1e-5) / (total + self.codebook_size * 1e-5) * total
        self.codebooks[k] = self.embed_sum[k] / smoothed[:, None]
        self.idle[k] = torch.where(counts > 0, 0.0, self.idle[k] + vectors.shape[0])
        return self._replace_dead(k, vectors)

    def _replace_dead(self, k: int, vectors: Tensor) -> int:
        dead = self.idle[k] >= self.dead_code_patience * self.codebook_size
        count = int(dead.sum())
        if count:
            share = vectors.shape[0] / self.codebook_size
            samples = vectors[torch.randint(vectors.shape[0], (count,), device=vectors.device)]
            self.codebooks[k][dead] = samples
            self.cluster_size[k][dead] = share
            self.embed_sum[k][dead] = samples * share
            self.idle[k][dead] = 0.0
        return count

    def usage(self, within: float = 4.0) -> Tensor:
        """``[K]`` fraction of codewords chosen within the last ``within * V`` vectors (uniform use: 98 %)."""
        return (self.idle < within * self.codebook_size).float().mean(dim=1)


def _perplexity(index: Tensor, weight: Tensor, size: int) -> Tensor:
    counts = torch.zeros(size, dtype=weight.dtype, device=index.device)
    counts.index_add_(0, index.reshape(-1), weight.expand_as(index[..., None]).reshape(-1))
    probs = counts / counts.sum().clamp_min(1e-8)
    return torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())


# ----------------------------------------------------------------------------- the codec


@dataclass
class CodecOutput:
    """Training pass of :class:`CodecModel`."""

    wav: Tensor  # [B, 1, T] reconstruction, delayed by config.output_delay samples
    codes: Tensor  # [B, K, F]
    commitment: Tensor  # scalar
    perplexity: Tensor  # [K]
    replaced: int


class CodecModel(nn.Module):
    """Encoder + residual VQ + decoder; the PyTorch core of :class:`tokenspeech.codecs.native.NativeCodec`.

    All methods take whole frames: ``T`` a multiple of ``hop_length``.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = CodecEncoder(config)
        self.quantizer = ResidualVectorQuantizer(config.num_codebooks, config.codebook_size, config.latent_dim,
                                                 config.ema_decay, config.dead_code_patience, config.kmeans_iterations)
        self.decoder = CodecDecoder(config)
        self.apply(_init_weights)

    def forward(self, wav: Tensor, active: Tensor) -> CodecOutput:
        """``wav [B, 1, T]``, ``active [B]`` codebooks per item -> :class:`CodecOutput`."""
        q = self.quantizer(self.encoder(wav), active)
        return CodecOutput(self.decoder(q.quantized), q.codes, q.commitment, q.perplexity, q.replaced)

    def encode(self, wav: Tensor, num_codebooks: int | None = None) -> Tensor:
        """``wav [B, 1, T] -> codes [B, n, T // hop_length]``."""
        return self.quantizer.encode(self.encoder(wav), num_codebooks)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, k, F] -> wav [B, 1, F * hop_length]``."""
        return self.decoder(self.quantizer.decode(codes))

    def init_encode_state(self, batch_size: int) -> EncoderState:
        return self.encoder.init_state(batch_size)

    def encode_step(self, wav: Tensor, state: EncoderState,
                    num_codebooks: int | None = None) -> tuple[Tensor, EncoderState]:
        latent, state = self.encoder.step(wav, state)
        return self.quantizer.encode(latent, num_codebooks), state

    def init_decode_state(self, batch_size: int) -> DecoderState:
        return self.decoder.init_state(batch_size)

    def decode_step(self, codes: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        return self.decoder.step(self.quantizer.decode(codes), state)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
