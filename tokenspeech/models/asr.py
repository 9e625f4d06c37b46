"""The ASR network: one streaming Conformer encoder with several decoder heads.

Axes: B batch, M mel bands, F feature frames (10 ms), T encoder frames
(40 ms), N tokens, D model dim, V character vocabulary, P phoneme vocabulary.

Heads (present when their decoder is in ``AsrModelConfig.decoders``):
``ctc`` character CTC (always; also gives dev WER and word timestamps),
``phonemes`` phoneme CTC (forced alignment for TTS durations), ``paraformer``
CIF predictor + parallel decoder (also used blockwise by ``semiar``), and
``ar`` an autoregressive attention decoder. This module holds layers only;
losses live in :mod:`tokenspeech.training.asr_losses`, decoding loops in
:mod:`tokenspeech.decoding`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import Tensor, nn

from tokenspeech.asr.base import DECODERS as ASR_DECODERS  # one definition, torch-free
from tokenspeech.asr.base import FRAME_SECONDS  # noqa: F401  (re-exported: one encoder frame, 40 ms)
from tokenspeech.errors import ConfigError
from tokenspeech.models.asr_encoder import AsrEncoder
from tokenspeech.models.asr_heads import AttentionDecoder, CifPredictor, ParallelDecoder
from tokenspeech.models.transformer import TransformerConfig


@dataclass(frozen=True)
class AsrModelConfig:
    """Dimensions of :class:`AsrModel`; stored in the model card and rebuilt from it."""

    n_mels: int = 80
    vocab_size: int = 32
    phoneme_vocab_size: int = 0  # 0: no phoneme CTC head
    dim: int = 256
    heads: int = 4
    encoder_layers: int = 8
    ff_mult: int = 2  # per macaron half of a Conformer block
    conv_kernel: int = 15
    subsample_channels: int = 64
    decoder_layers: int = 2  # parallel (Paraformer / semi-AR) decoder
    ar_layers: int = 2
    decoder_ff_mult: int = 4
    dropout: float = 0.1
    decoders: tuple[str, ...] = ASR_DECODERS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.decoders) - set(ASR_DECODERS))
        if unknown or "ctc" not in self.decoders:
            raise ConfigError(f"decoders must include 'ctc' and come from {ASR_DECODERS}; got {self.decoders}")
        for name in ("n_mels", "vocab_size", "dim", "heads", "encoder_layers", "conv_kernel",
                     "subsample_channels", "decoder_layers", "ar_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AsrModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ConfigError(f"dim {self.dim} must split into {self.heads} heads of even size")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")

    @property
    def has_parallel_decoder(self) -> bool:
        return "paraformer" in self.decoders or "semiar" in self.decoders

    def encoder_config(self) -> TransformerConfig:
        return TransformerConfig(dim=self.dim, heads=self.heads, layers=self.encoder_layers,
                                 ff_mult=self.ff_mult, dropout=self.dropout, causal=False)

    def decoder_config(self, layers: int, causal: bool) -> TransformerConfig:
        return TransformerConfig(dim=self.dim, heads=self.heads, layers=layers, ff_mult=self.decoder_ff_mult,
                                 dropout=self.dropout, cross_attention=True, causal=causal)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["decoders"] = list(self.decoders)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AsrModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"AsrModelConfig: unknown field(s) {unknown}")
        values = dict(data)
        if "decoders" in values:
            values["decoders"] = tuple(values["decoders"])
        return cls(**values)


class AsrModel(nn.Module):
    """Encoder plus heads. ``encode`` is shared; each decoder reads its own head."""

    def __init__(self, config: AsrModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AsrEncoder(config.n_mels, config.encoder_config(), config.conv_kernel,
                                  config.subsample_channels)
        self.ctc = nn.Linear(config.dim, config.vocab_size)
        self.phoneme_ctc = nn.Linear(config.dim, config.phoneme_vocab_size) if config.phoneme_vocab_size else None
        self.predictor = CifPredictor(config.dim, config.dropout) if config.has_parallel_decoder else None
        self.parallel_decoder = (ParallelDecoder(config.decoder_config(config.decoder_layers, causal=False),
                                                 config.vocab_size) if config.has_parallel_decoder else None)
        self.attention_decoder = (AttentionDecoder(config.decoder_config(config.ar_layers, causal=True),
                                                   config.vocab_size) if "ar" in config.decoders else None)

    def encode(self, mel: Tensor, mel_lengths: Tensor, chunk: int = 0, left_chunks: int = 0) -> tuple[Tensor, Tensor]:
        """``mel [B, M, F]`` -> encoder output ``[B, T, D]``, lengths ``[B]`` (see :class:`AsrEncoder`)."""
        return self.encoder(mel, mel_lengths, chunk, left_chunks)

    def ctc_log_probs(self, encoded: Tensor) -> Tensor:
        """Character CTC log-probabilities ``[B, T, V]`` (blank = id 0, ``<pad>``)."""
        return self.ctc(encoded).log_softmax(dim=-1)

    def phoneme_log_probs(self, encoded: Tensor) -> Tensor:
        """Phoneme CTC log-probabilities ``[B, T, P]`` (blank = id 0)."""
        if self.phoneme_ctc is None:
            raise ConfigError("this model has no phoneme CTC head (phoneme_vocab_size = 0)")
        return self.phoneme_ctc(encoded).log_softmax(dim=-1)

    def require(self, decoder: str) -> None:
        """Raise :class:`ConfigError` when the model was built without ``decoder``."""
        if decoder not in self.config.decoders:
            raise ConfigError(f"this model has no '{decoder}' decoder; it was trained with {self.config.decoders}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
