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

The causal layers live in :mod:`tokenspeech.models.codec_layers`, the
quantizer in :mod:`tokenspeech.models.rvq`. Every convolution is left-padded
(no lookahead) and carries its history in an explicit state; LayerNorm and
Linear act per time step. ``forward`` is the offline pass and equals ``step``
run from the zero state, chunk after chunk.

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

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from tokenspeech.errors import ConfigError
from tokenspeech.models.codec_layers import CausalConvNeXtStack, CausalSpectrum, IstftHead
from tokenspeech.models.rvq import ResidualVectorQuantizer


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
