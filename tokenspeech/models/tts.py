"""The TTS networks: text encoder, durations, length regulator, masked codec transformer, AR codec LM.

Axes: B batch, N phonemes, F codec frames (25 Hz), K codebooks used,
V codebook size, D model dim, G codebooks asked for in one pass.

Data flow (one sentence)::

    phoneme ids [B, N] + voice [B]
      -> TextEncoder (embedding + speaker + bidirectional Transformer)   h [B, N, D]
      -> DurationPredictor                                              log(1 + d) [B, N]
      -> length_regulate(h, durations) + speaker + in-phoneme position  cond [B, F, D]
    cond + sum_k emb_k(codes[:, k])  (masked positions: a mask embedding)
      -> MaskedCodecTransformer (full or block-causal attention)        logits [B, G, F, V]
    cond[t] + emb(code_1[t-1])
      -> ArCodecLM (causal, KV cache)                                   logits [B, F, V]

The frame-aligned conditioning carries the text (with lookahead through the
bidirectional text encoder), so the codec models never attend to the text:
alignment is explicit (durations from the aligner), not learnt by attention.

Token convention: codec codes are ``0..V-1``; ``V`` is the mask token of the
masked model and the BOS token of the AR model. Nothing here decodes; the
strategies live in :mod:`tokenspeech.decoding` and the glue in
:mod:`tokenspeech.tts.torch_backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenspeech.errors import ConfigError
from tokenspeech.models.transformer import Transformer, TransformerConfig


@dataclass(frozen=True)
class TtsConfig:
    """Every dimension of the TTS model; saved in its model card."""

    num_phonemes: int
    num_voices: int
    num_codebooks: int = 6  # first K codebooks of the codec (tscodec: 6 = 1.5 kbps)
    codebook_size: int = 1024
    dim: int = 256
    heads: int = 4
    ff_mult: int = 3
    text_layers: int = 4
    codec_layers: int = 4
    ar_layers: int = 3
    frame_layers: int = 0  # transformer layers over the frame conditioning, run once per sentence (0 = none)
    duration_channels: int = 256
    dropout: float = 0.1
    context_codebooks: int = 1  # semi-AR: codebooks of earlier blocks the network sees (the rest masked)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise ConfigError(f"TtsConfig.dropout must be in [0, 1), got {value}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if f.name.endswith(
                    "layers") else 1):
                raise ConfigError(f"TtsConfig.{f.name} must be a positive integer, got {value!r}")
        if self.context_codebooks > self.num_codebooks:
            raise ConfigError("TtsConfig.context_codebooks cannot exceed num_codebooks")
        TransformerConfig(dim=self.dim, heads=self.heads)  # validates dim / heads

    @property
    def mask_id(self) -> int:
        """The mask token (masked model) and BOS token (AR model): one past the last code."""
        return self.codebook_size

    def transformer(self, layers: int, causal: bool, final_norm: bool = True) -> TransformerConfig:
        return TransformerConfig(dim=self.dim, heads=self.heads, layers=layers, ff_mult=self.ff_mult,
                                 dropout=self.dropout, causal=causal, final_norm=final_norm)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TtsConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TtsConfig: unknown fields {unknown}")
        return cls(**data)


def run_with_mask(transformer: Transformer, x: Tensor, mask: Tensor | None) -> Tensor:
    """The shared Transformer's blocks under an arbitrary bool attention ``mask [B or 1, 1, S, S]``."""
    for block in transformer.blocks:
        x, _ = block(x, mask)
    return transformer.norm(x)


def block_causal_mask(frames: int, block_frames: Tensor, lengths: Tensor | None = None) -> Tensor:
    """``[B, 1, F, F]`` bool: frame ``q`` may attend to frame ``k`` iff ``k // b <= q // b`` (and ``k`` is valid).

    ``block_frames [B]`` is each item's block size. This is what cached
    blockwise inference computes: a block sees all earlier blocks and itself.
    """
    position = torch.arange(frames, device=block_frames.device)
    blocks = position[None, :] // block_frames[:, None]  # [B, F]
    mask = blocks[:, None, :] <= blocks[:, :, None]  # [B, q, k]
    if lengths is not None:
        mask = mask & (position[None, None, :] < lengths[:, None, None])
    return mask[:, None]


class TextEncoder(nn.Module):
    """``phonemes [B, N]`` + ``voice [B]`` -> ``h [B, N, D]`` (bidirectional)."""

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.num_phonemes, config.dim)
        self.transformer = Transformer(config.transformer(config.text_layers, causal=False))

    def forward(self, phonemes: Tensor, speaker: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``speaker [B, D]`` is the voice embedding (added to every position)."""
        x = self.embedding(phonemes) + speaker[:, None, :]
        return self.transformer(x, lengths)


class DurationPredictor(nn.Module):
    """FastSpeech-style: two conv layers over ``h [B, N, D]`` -> ``log(1 + frames) [B, N]``."""

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        channels = config.duration_channels
        self.conv1 = nn.Conv1d(config.dim, channels, 3, padding=1)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = nn.LayerNorm(channels)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(channels, 1)

    def forward(self, h: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is not None:  # padded phonemes must not leak into their neighbours through the convs
            h = h * (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None])[..., None]
        x = self.drop(self.norm1(F.relu(self.conv1(h.transpose(1, 2))).transpose(1, 2)))
        x = self.drop(self.norm2(F.relu(self.conv2(x.transpose(1, 2))).transpose(1, 2)))
        return self.out(x).squeeze(-1)


def length_regulate(h: Tensor, durations: Tensor, frames: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Repeat phoneme states by their durations.

    ``h [B, N, D]``, ``durations [B, N]`` int (0 allowed; padded phonemes
    must be 0) -> ``(x [B, F, D], index [B, F], frame_lengths [B])`` where
    ``F = frames or max total``, ``index`` is the phoneme of each frame
    (clamped for padding frames) and frames past an item's total are zero.
    """
    durations = durations.long()
    ends = durations.cumsum(dim=1)  # [B, N]
    lengths = ends[:, -1] if ends.shape[1] else durations.new_zeros(durations.shape[0])
    total = int(lengths.max()) if frames is None else frames
    position = torch.arange(total, device=h.device)[None, :].expand(h.shape[0], -1).contiguous()
    index = torch.searchsorted(ends, position, right=True).clamp_max(max(h.shape[1] - 1, 0))  # [B, F]
    x = torch.gather(h, 1, index[..., None].expand(-1, -1, h.shape[2]))
    valid = position < lengths[:, None]
    return x * valid[..., None], index, lengths


def phoneme_position(durations: Tensor, index: Tensor) -> Tensor:
    """``[B, F, 2]`` features of each frame inside its phoneme: relative position in [0, 1) and log duration."""
    durations = durations.long()
    starts = durations.cumsum(dim=1) - durations
    length = torch.gather(durations, 1, index).clamp_min(1).float()
    offset = torch.arange(index.shape[1], device=index.device)[None, :] - torch.gather(starts, 1, index)
    return torch.stack([offset.float() / length, torch.log(length)], dim=-1)


class Conditioner(nn.Module):
    """Frame-level conditioning ``[B, F, D]`` from phoneme states, durations and the speaker.

    With ``frame_layers`` the length-regulated states go through a bidirectional
    transformer over the sentence's frames (FastSpeech's decoder, without its
    output layer). It runs once per sentence, while the codec transformer runs
    once per decoding pass, so it adds acoustic capacity at little inference
    cost. Its blocks start as the identity (zeroed output projections), so a
    trained model without them can grow them and keep its function.
    """

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        self.position = nn.Linear(2, config.dim)
        self.norm = nn.LayerNorm(config.dim)
        self.null = nn.Parameter(torch.zeros(config.dim))  # unconditional input (classifier-free guidance)
        self.frames = None
        if config.frame_layers:
            self.frames = Transformer(config.transformer(config.frame_layers, causal=False, final_norm=False))
            for block in self.frames.blocks:
                for layer in (block.attention.out, block.ff[-1]):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor, durations: Tensor, speaker: Tensor, frames: int | None = None) -> tuple[Tensor,
                                                                                                         Tensor]:
        """-> ``(cond [B, F, D], frame_lengths [B])``; frames past an item's length are zero."""
        x, index, lengths = length_regulate(h, durations, frames)
        valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        cond = self.norm(x + self.position(phoneme_position(durations, index)) + speaker[:, None, :])
        if self.frames is not None:
            cond = self.frames(cond * valid, lengths)
        return cond * valid, lengths

    def unconditional(self, cond: Tensor) -> Tensor:
        """The null conditioning with the shape of ``cond``."""
        return self.null.expand_as(cond)


class CodeEmbedding(nn.Module):
    """Sum of per-codebook embeddings: ``codes [B, K, F]`` (``V`` = masked) -> ``[B, F, D]``.

    One table of ``K (V + 1)`` rows and one gather, so the number of
    codebooks stays a plain axis in an ONNX export.
    """

    def __init__(self, codebooks: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.rows = codebook_size + 1
        self.table = nn.Embedding(codebooks * self.rows, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, codes: Tensor) -> Tensor:
        offsets = torch.arange(codes.shape[1], device=codes.device)[None, :, None] * self.rows
        return self.table(codes + offsets).sum(dim=1)


class CodebookHeads(nn.Module):
    """One linear head per codebook: ``x [B, F, D]`` -> logits ``[B, G, F, V]`` for the chosen codebooks."""

    def __init__(self, codebooks: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(codebooks, codebook_size, dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(codebooks, codebook_size))

    def forward(self, x: Tensor, codebooks: Sequence[int] | None = None) -> Tensor:
        """``codebooks`` (default: all) must be increasing; a contiguous run is a view, not a copy."""
        if codebooks is None:
            weight, bias = self.weight, self.bias
        elif list(codebooks) == list(range(codebooks[0], codebooks[0] + len(codebooks))):
            weight, bias = self.weight[codebooks[0]:codebooks[0] + len(codebooks)], self.bias[
                codebooks[0]:codebooks[0] + len(codebooks)]
        else:
            index = torch.tensor(list(codebooks), dtype=torch.long, device=x.device)
            weight, bias = self.weight[index], self.bias[index]
        return torch.matmul(x[:, None], weight.transpose(1, 2)) + bias[None, :, None, :]  # [B, G, F, V]


class MaskedCodecTransformer(nn.Module):
    """Bidirectional masked-token model over codec frames (MaskGCT / SoundStorm style).

    ``forward(codes [B, K, F], cond [B, F, D], mask) -> hidden [B, F, D]``;
    ``heads(hidden, codebooks)`` gives logits. Attention is full (NAR), or
    block-causal (semi-AR training), or cached blockwise through
    ``transformer.step`` (semi-AR inference: a block sees earlier blocks and itself).
    """

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        self.embed = CodeEmbedding(config.num_codebooks, config.codebook_size, config.dim)
        self.transformer = Transformer(config.transformer(config.codec_layers, causal=False))
        self.heads = CodebookHeads(config.num_codebooks, config.codebook_size, config.dim)

    def inputs(self, codes: Tensor, cond: Tensor) -> Tensor:
        return cond + self.embed(codes)

    def forward(self, codes: Tensor, cond: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask [B or 1, 1, F, F]`` bool (True = may attend); None = full attention."""
        return run_with_mask(self.transformer, self.inputs(codes, cond), mask)


class ArCodecLM(nn.Module):
    """Causal LM over first-codebook codes: input at frame ``t`` = ``cond[t] + emb(code[t-1])`` (BOS at t=0)."""

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.codebook_size + 1, config.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.transformer = Transformer(config.transformer(config.ar_layers, causal=True))
        self.head = nn.Linear(config.dim, config.codebook_size)

    def forward(self, previous: Tensor, cond: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``previous [B, F]`` (BOS then codes shifted by one) -> logits ``[B, F, V]``."""
        return self.head(self.transformer(cond + self.embed(previous), lengths))


class TtsModel(nn.Module):
    """All TTS networks together; decoding strategies reach them through the torch backend."""

    def __init__(self, config: TtsConfig) -> None:
        super().__init__()
        self.config = config
        self.speaker = nn.Embedding(config.num_voices, config.dim)
        nn.init.normal_(self.speaker.weight, std=0.02)
        self.text_encoder = TextEncoder(config)
        self.duration = DurationPredictor(config)
        self.conditioner = Conditioner(config)
        self.codec = MaskedCodecTransformer(config)
        self.ar = ArCodecLM(config) if config.ar_layers > 0 else None

    def encode_text(self, phonemes: Tensor, voice: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> ``(h [B, N, D], log(1 + duration) predictions [B, N])``."""
        speaker = self.speaker(voice)
        h = self.text_encoder(phonemes, speaker, lengths)
        return h, self.duration(h, lengths)

    def condition(self, h: Tensor, durations: Tensor, voice: Tensor, frames: int | None = None) -> tuple[Tensor,
                                                                                                        Tensor]:
        """-> ``(cond [B, F, D], frame_lengths [B])``."""
        return self.conditioner(h, durations, self.speaker(voice), frames)


def predicted_durations(log_durations: Tensor, rate: float = 1.0, lengths: Tensor | None = None) -> Tensor:
    """Frames per phoneme ``[B, N]`` int64 from ``log(1 + d)`` predictions, sped up by ``rate``.

    Cumulative sums are rounded (as when converting aligner durations), so
    the total follows the unrounded sum; every item gets at least one frame.
    """
    frames = torch.expm1(log_durations.float()).clamp_min(0.0) / rate
    if lengths is not None:
        frames = frames * (torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None])
    ends = torch.round(frames.cumsum(dim=1)).long()
    ends[:, -1] = ends[:, -1].clamp_min(1)
    return torch.diff(ends, dim=1, prepend=torch.zeros_like(ends[:, :1])).clamp_min(0)


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


__all__ = [
    "ArCodecLM",
    "Conditioner",
    "DurationPredictor",
    "MaskedCodecTransformer",
    "TextEncoder",
    "TtsConfig",
    "TtsModel",
    "block_causal_mask",
    "count_parameters",
    "length_regulate",
    "phoneme_position",
    "predicted_durations",
    "run_with_mask",
]
