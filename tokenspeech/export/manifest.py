"""The one definition of every exported graph, input and output name, and the manifest layout.

Torch-free: the exporter (:mod:`tokenspeech.export`) and the runtime
(:mod:`tokenspeech.runtime`) both import it. The exporter writes each names
object into ``manifest.json`` (``models.<model>.names``); the runtime rebuilds
the object from there (:meth:`from_json`), so it uses the names an export was
made with and never retypes a string. The field names are the roles; the
values are what the ONNX files call them.

``manifest.json`` (format version :data:`FORMAT_VERSION`)::

    {"format_version", "opset", "versions": {...}, "quantize", "fp16",
     "models": {"codec" | "tts" | "asr": {
         "kind", "names": {...}, "graphs": {graph: {"file", "inputs": [...], "outputs": [...]}},
         ... model facts: vocabularies, sample and frame rates, decoding defaults ...}}}

Every ``inputs`` / ``outputs`` entry is ``{"name", "dtype", "shape"}`` where a
dynamic axis is a string (``"batch"``, ``"frames"``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

FORMAT_VERSION = 1
OPSET = 17
MANIFEST_FILE = "manifest.json"
KINDS = ("codec", "tts", "asr")

NamesT = TypeVar("NamesT", bound="_Names")


@dataclass(frozen=True)
class _Names:
    """Shared helpers: JSON round trip and per-layer state names."""

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls: type[NamesT], data: dict[str, str]) -> NamesT:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def cache_names(pattern: str, layers: int, kinds: tuple[str, ...] = ("key", "value")) -> list[str]:
    """``pattern`` (with ``{layer}`` and ``{kind}``) for every layer and kind, layer-major."""
    return [pattern.format(layer=layer, kind=kind) for layer in range(layers) for kind in kinds]


@dataclass(frozen=True)
class CodecGraphNames(_Names):
    """Graphs and tensors of an exported tscodec (see :mod:`tokenspeech.export.codec`)."""

    wav: str = "wav"  # float32 [B, 1, T]
    codes: str = "codes"  # int64 [B, K, F]
    state_in_prefix: str = "state_in."
    state_out_prefix: str = "state_out."
    encoder_step: str = "encoder_step"
    decoder_step: str = "decoder_step"
    encoder: str = "encoder"
    decoder: str = "decoder"

    def state_inputs(self, state: Any) -> list[str]:
        """Input names of a codec state object (exporter side; imports torch)."""
        from tokenspeech.models.codec import flatten_state

        return [self.state_in_prefix + name for name, _ in flatten_state(state)]

    def state_outputs(self, state: Any) -> list[str]:
        from tokenspeech.models.codec import flatten_state

        return [self.state_out_prefix + name for name, _ in flatten_state(state)]

    def graph_file(self, prefix: str, graph: str) -> str:
        return f"{prefix}_{graph}.onnx"


@dataclass(frozen=True)
class TtsNames(_Names):
    """Graphs and tensors of an exported TTS model (see :mod:`tokenspeech.export.tts`).

    Axes: B batch, N phonemes, F frames, S new frames, K codebooks, G codebooks asked for, V codebook size, D dim.
    """

    # graphs
    text: str = "tts_text"  # phonemes, voice, rate -> hidden, durations (the duration predictor)
    condition: str = "tts_condition"  # hidden, durations, voice -> cond
    unconditional: str = "tts_unconditional"  # cond -> uncond (the null conditioning, same shape)
    masked: str = "tts_masked"  # NAR step: codes, cond, codebooks -> logits
    block: str = "tts_block"  # semi-AR step: codes, cond, codebooks, cache -> logits, cache
    ar_step: str = "tts_ar_step"  # AR step: tokens, cond, cache -> logits, cache
    # tensors
    phonemes: str = "phonemes"  # int64 [B, N]
    voice: str = "voice"  # int64 [B]
    rate: str = "rate"  # float32 [] speaking rate
    hidden: str = "hidden"  # float32 [B, N, D]
    durations: str = "durations"  # int64 [B, N] frames per phoneme
    cond: str = "cond"  # float32 [B, F, D] (or [B, S, D] for steps)
    uncond: str = "uncond"  # float32 [B, F, D] classifier-free guidance input
    codes: str = "codes"  # int64 [B, K, F]; negative = masked
    codebooks: str = "codebooks"  # int64 [G] increasing
    tokens: str = "tokens"  # int64 [B, S] previous first-codebook codes (V = BOS)
    logits: str = "logits"  # float32 [B, G, F, V] or [B, S, V]
    cache_in: str = "cache_in.{layer}.{kind}"  # float32 [B, H, P, Dh]
    cache_out: str = "cache_out.{layer}.{kind}"  # float32 [B, H, P + S, Dh]


@dataclass(frozen=True)
class AsrNames(_Names):
    """Graphs and tensors of an exported ASR model (see :mod:`tokenspeech.export.asr`).

    Axes: B batch, M mel bands, F feature frames, T encoder frames, N tokens, D dim, V vocabulary.
    """

    # graphs
    encoder: str = "asr_encoder"  # offline: mel, mel_lengths, chunk, left_chunks -> hidden, lengths, heads
    subsample: str = "asr_subsample"  # streaming: mel -> frames (normalised, x4 subsampled)
    encoder_chunk: str = "asr_encoder_chunk"  # streaming: frames + caches -> hidden, heads, caches
    paraformer: str = "asr_paraformer"  # acoustic, token_lengths, hidden, lengths -> logits
    ar_memory: str = "asr_ar_memory"  # hidden, lengths -> memory keys/values, memory_mask
    ar_step: str = "asr_ar_step"  # tokens, caches, memory, memory_mask -> logits, caches
    block_memory: str = "asr_block_memory"  # frames -> memory keys/values of the parallel decoder
    block_step: str = "asr_block_step"  # acoustic, caches, memory -> logits
    block_context: str = "asr_block_context"  # tokens, caches, memory -> caches
    # tensors
    mel: str = "mel"  # float32 [B, M, F] natural-log mel power
    mel_lengths: str = "mel_lengths"  # int64 [B]
    chunk: str = "chunk"  # int64 [] encoder frames per attention chunk; 0 = full context
    left_chunks: str = "left_chunks"  # int64 []; 0 = all left context
    frames: str = "frames"  # float32 [B, T, D] subsampled frames before the Conformer blocks
    past_lengths: str = "past_lengths"  # int64 [B] valid cached positions of each stream (streaming chunk)
    hidden: str = "hidden"  # float32 [B, T, D] encoder output
    lengths: str = "lengths"  # int64 [B] encoder frames
    ctc_log_probs: str = "ctc_log_probs"  # float32 [B, T, V]
    alphas: str = "alphas"  # float32 [B, T] CIF weights (models with a parallel decoder)
    acoustic: str = "acoustic"  # float32 [B, N, D] CIF embeddings
    token_lengths: str = "token_lengths"  # int64 [B]
    tokens: str = "tokens"  # int64 [B, S]
    logits: str = "logits"  # float32 [B, N, V]
    memory_mask: str = "memory_mask"  # bool [B, 1, 1, T]
    cache_in: str = "cache_in.{layer}.{kind}"  # kinds key, value [B, H, P, Dh]; conv [B, D, K - 1]
    cache_out: str = "cache_out.{layer}.{kind}"
    memory: str = "memory.{layer}.{kind}"  # cross-attention keys / values [B, H, T, Dh]


NAMES: dict[str, type[_Names]] = {"codec": CodecGraphNames, "tts": TtsNames, "asr": AsrNames}
