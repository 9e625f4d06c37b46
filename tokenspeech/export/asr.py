"""Export an ASR model (:class:`tokenspeech.models.asr.AsrModel`) to ONNX; names from :class:`AsrNames`.

Encoder (always):

- ``asr_encoder`` (offline): ``mel [B, M, F], mel_lengths [B], chunk [], left_chunks []`` ->
  ``hidden [B, T, D], lengths [B], ctc_log_probs [B, T, V]`` (+ ``alphas [B, T]`` with a parallel decoder).
  ``chunk = 0`` is full context; otherwise the chunk-wise mask of semi-AR decoding.
- ``asr_subsample`` (streaming): ``mel [B, M, F]`` -> ``frames [B, T, D]`` (normalised, x4 subsampled;
  frame ``t`` needs mel frames ``4t .. 4t + 6``, so the runtime keeps the unconsumed tail).
- ``asr_encoder_chunk`` (streaming): ``frames [B, c, D]``, ``past_lengths [B]`` + per layer
  ``key, value [B, H, P, Dh]`` and ``conv [B, D, K - 1]`` caches -> ``hidden [B, c, D]``, heads, new
  caches ``[B, H, P + c, Dh]`` (all left context kept). Row ``b``'s caches hold ``past_lengths[b]``
  valid positions, the rest padding, so chunks of streams at different positions run as one batch.

Decoders (when the model has them):

- ``asr_paraformer``: ``acoustic [B, N, D], token_lengths [B], hidden, lengths`` -> ``logits [B, N, V]``
- ``asr_ar_memory``: ``hidden, lengths`` -> cross-attention ``memory.<l>.key|value`` and ``memory_mask``;
  ``asr_ar_step``: ``tokens [B, S], memory_mask``, caches, memory -> ``logits [B, S, V]``, caches
- ``asr_block_memory``: ``frames [B, T, D]`` -> memory of the parallel decoder (the runtime appends it);
  ``asr_block_step``: ``acoustic``, caches, memory -> ``logits``; ``asr_block_context``: ``tokens``,
  caches, memory -> caches (semi-AR streaming, :class:`tokenspeech.decoding.streaming_asr.SemiARStreamer`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokenspeech.asr.model_io import AsrBundle
from tokenspeech.export.graph import GraphSpec, PostProcess, cache_pairs, export_specs, flat_caches, layer_caches
from tokenspeech.export.manifest import AsrNames, cache_names
from tokenspeech.models.asr import FRAME_SECONDS, AsrModel
from tokenspeech.models.asr_encoder import rows_mask_and_rope
from tokenspeech.models.conformer import SUBSAMPLING, SUBSAMPLING_CONTEXT, subsampled_length
from tokenspeech.models.transformer import LayerCache, attention_mask

NAMES = AsrNames()


def chunk_mask_tensor(length: int | Tensor, chunk: Tensor, left_chunks: Tensor, lengths: Tensor) -> Tensor:
    """:func:`tokenspeech.models.conformer.chunk_mask` with ``chunk`` / ``left_chunks`` as tensors.

    ``chunk = 0`` (full context) becomes one chunk as long as the input,
    and ``left_chunks = 0`` a limit that never binds, so the graph has no
    Python branch on either. ``[B, 1, T, T]`` bool.
    """
    index = torch.arange(length, device=lengths.device)
    size = torch.where(chunk > 0, chunk, index.numel() + 1)
    block = torch.div(index, size, rounding_mode="floor")
    query, key = block[:, None], block[None, :]
    visible = (key <= query) & ((left_chunks <= 0) | (key >= query - left_chunks))
    keys = index[None, :] < lengths[:, None]
    return visible[None, None] & keys[:, None, None, :]


class _Heads(nn.Module):
    """The frame-wise heads every encoder graph returns: CTC log-probabilities and, if present, CIF weights."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.model = model

    def heads(self, hidden: Tensor) -> tuple[Tensor, ...]:
        out = (self.model.ctc_log_probs(hidden),)
        return out + ((self.model.predictor(hidden),) if self.model.predictor is not None else ())


class EncoderGraph(_Heads):
    def forward(self, mel: Tensor, mel_lengths: Tensor, chunk: Tensor, left_chunks: Tensor) -> tuple[Tensor, ...]:
        encoder = self.model.encoder
        x = encoder.subsampling(encoder.normalise(mel))
        lengths = subsampled_length(mel_lengths)
        mask = chunk_mask_tensor(x.shape[1], chunk, left_chunks, lengths)
        for block in encoder.blocks:
            x, _, _ = block(x, mask)
        return (x, lengths, *self.heads(x))


class SubsampleGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, mel: Tensor) -> Tensor:
        return self.encoder.subsampling(self.encoder.normalise(mel))


class EncoderChunkGraph(_Heads):
    """One chunk of each of B streams; row b's caches hold ``past_lengths[b]`` valid positions (padded to P)."""

    def forward(self, frames: Tensor, past_lengths: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        encoder = self.model.encoder
        mask, rope = rows_mask_and_rope(past_lengths, caches[0], frames, encoder.config.dim // encoder.config.heads)
        x, new = frames, []
        for i, block in enumerate(encoder.blocks):
            key, value, conv = caches[3 * i: 3 * i + 3]
            x, cache, conv = block(x, mask, LayerCache(key, value), conv, rope)
            new += [cache.key, cache.value, conv]
        return (x, *self.heads(x), *new)


class ParaformerGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.decoder = model.parallel_decoder

    def forward(self, acoustic: Tensor, token_lengths: Tensor, hidden: Tensor, lengths: Tensor) -> Tensor:
        return self.decoder(acoustic, token_lengths, hidden, lengths)


class ArMemoryGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.decoder = model.attention_decoder

    def forward(self, hidden: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        mask = attention_mask(lengths, hidden.shape[1], causal=False)[:, :, :1, :]
        return (mask, *(t for kv in self.decoder.transformer.memory_kv(hidden) for t in kv))


class ArStepGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.decoder = model.attention_decoder
        self.layers = len(self.decoder.transformer.blocks)

    def forward(self, tokens: Tensor, memory_mask: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        caches, memory = rest[: 2 * self.layers], rest[2 * self.layers:]
        logits, new = self.decoder.step(tokens, layer_caches(caches), cache_pairs(memory), memory_mask)
        return (logits, *flat_caches(new))


class BlockMemoryGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.transformer = model.parallel_decoder.transformer

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for kv in self.transformer.memory_kv(frames) for t in kv)


class BlockStepGraph(nn.Module):
    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        self.decoder = model.parallel_decoder
        self.layers = len(self.decoder.transformer.blocks)

    def forward(self, acoustic: Tensor, *rest: Tensor) -> Tensor:
        caches, memory = rest[: 2 * self.layers], rest[2 * self.layers:]
        logits, _ = self.decoder.step(acoustic, layer_caches(caches), cache_pairs(memory))
        return logits


class BlockContextGraph(BlockStepGraph):
    def forward(self, tokens: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        inputs = self.decoder.embed(tokens)
        caches, memory = rest[: 2 * self.layers], rest[2 * self.layers:]
        _, new = self.decoder.step(inputs, layer_caches(caches), cache_pairs(memory))
        return flat_caches(new)


def _encoder_specs(model: AsrModel, names: AsrNames, batch: int) -> dict[str, GraphSpec]:
    config = model.config
    heads = [names.ctc_log_probs] + ([names.alphas] if model.predictor is not None else [])
    mel = torch.randn(batch, config.n_mels, 45)
    mel_lengths = torch.tensor([45, 38][:batch])
    frame_axes = {0: "batch", 1: "frames"}
    head_axes = {name: frame_axes for name in heads}
    layers = config.encoder_layers
    kinds = ("key", "value", "conv")
    cache_in, cache_out = cache_names(names.cache_in, layers, kinds), cache_names(names.cache_out, layers, kinds)
    head_dim = config.dim // config.heads
    caches = []
    for _ in range(layers):
        caches += [torch.randn(batch, config.heads, 6, head_dim), torch.randn(batch, config.heads, 6, head_dim),
                   torch.randn(batch, config.dim, config.conv_kernel - 1)]
    cache_axes = {name: {0: "batch", 2: "past"} for name in cache_in if not name.endswith("conv")}
    cache_axes |= {name: {0: "batch", 2: "total"} for name in cache_out if not name.endswith("conv")}
    cache_axes |= {name: {0: "batch"} for name in cache_in + cache_out if name.endswith("conv")}
    return {
        names.encoder: GraphSpec(
            EncoderGraph(model), (mel, mel_lengths, torch.tensor(2), torch.tensor(1)),
            [names.mel, names.mel_lengths, names.chunk, names.left_chunks], [names.hidden, names.lengths, *heads],
            {names.mel: {0: "batch", 2: "mel_frames"}, names.mel_lengths: {0: "batch"}, names.hidden: frame_axes,
             names.lengths: {0: "batch"}, **head_axes}),
        names.subsample: GraphSpec(SubsampleGraph(model), (mel,), [names.mel], [names.frames],
                                   {names.mel: {0: "batch", 2: "mel_frames"}, names.frames: frame_axes}),
        names.encoder_chunk: GraphSpec(
            EncoderChunkGraph(model), (torch.randn(batch, 3, config.dim), torch.tensor([6, 4][:batch]), *caches),
            [names.frames, names.past_lengths, *cache_in], [names.hidden, *heads, *cache_out],
            {names.frames: frame_axes, names.past_lengths: {0: "batch"}, names.hidden: frame_axes, **head_axes,
             **cache_axes}),
    }


def _decoder_cache_specs(names: AsrNames, layers: int, heads: int, head_dim: int, batch: int,
                         memory_frames: int) -> tuple[list[str], list[str], list[str], tuple[Tensor, ...],
                                                      dict[str, dict[int, str]]]:
    cache_in, cache_out = cache_names(names.cache_in, layers), cache_names(names.cache_out, layers)
    memory = cache_names(names.memory, layers)
    args = tuple(torch.randn(batch, heads, 4, head_dim) for _ in cache_in) + tuple(
        torch.randn(batch, heads, memory_frames, head_dim) for _ in memory)
    axes = {**{n: {0: "batch", 2: "past"} for n in cache_in}, **{n: {0: "batch", 2: "total"} for n in cache_out},
            **{n: {0: "batch", 2: "frames"} for n in memory}}
    return cache_in, cache_out, memory, args, axes


def _decoder_specs(model: AsrModel, names: AsrNames, batch: int) -> dict[str, GraphSpec]:
    config = model.config
    head_dim, frames, tokens = config.dim // config.heads, 11, 5
    hidden, lengths = torch.randn(batch, frames, config.dim), torch.tensor([frames, 8][:batch])
    token_axes = {0: "batch", 1: "tokens"}
    specs: dict[str, GraphSpec] = {}
    if model.parallel_decoder is not None:
        specs[names.paraformer] = GraphSpec(
            ParaformerGraph(model), (torch.randn(batch, tokens, config.dim), torch.tensor([tokens, 3][:batch]),
                                     hidden, lengths),
            [names.acoustic, names.token_lengths, names.hidden, names.lengths], [names.logits],
            {names.acoustic: token_axes, names.token_lengths: {0: "batch"}, names.hidden: {0: "batch", 1: "frames"},
             names.lengths: {0: "batch"}, names.logits: token_axes})
        cache_in, cache_out, memory, args, axes = _decoder_cache_specs(
            names, config.decoder_layers, config.heads, head_dim, batch, frames)
        specs[names.block_memory] = GraphSpec(BlockMemoryGraph(model), (hidden,), [names.frames], memory,
                                              {names.frames: {0: "batch", 1: "frames"}, **axes})
        specs[names.block_step] = GraphSpec(
            BlockStepGraph(model), (torch.randn(batch, tokens, config.dim), *args),
            [names.acoustic, *cache_in, *memory], [names.logits],
            {names.acoustic: token_axes, names.logits: token_axes, **axes})
        specs[names.block_context] = GraphSpec(
            BlockContextGraph(model), (torch.randint(config.vocab_size, (batch, tokens)), *args),
            [names.tokens, *cache_in, *memory], cache_out, {names.tokens: token_axes, **axes})
    if model.attention_decoder is not None:
        cache_in, cache_out, memory, args, axes = _decoder_cache_specs(
            names, config.ar_layers, config.heads, head_dim, batch, frames)
        mask_axes = {0: "batch", 3: "frames"}
        specs[names.ar_memory] = GraphSpec(
            ArMemoryGraph(model), (hidden, lengths), [names.hidden, names.lengths], [names.memory_mask, *memory],
            {names.hidden: {0: "batch", 1: "frames"}, names.lengths: {0: "batch"}, names.memory_mask: mask_axes,
             **axes})
        memory_mask = attention_mask(lengths, frames, causal=False)[:, :, :1, :]
        # two new positions, so the traced graph keeps the causal mask among new positions
        specs[names.ar_step] = GraphSpec(
            ArStepGraph(model), (torch.randint(config.vocab_size, (batch, 2)), memory_mask, *args),
            [names.tokens, names.memory_mask, *cache_in, *memory], [names.logits, *cache_out],
            {names.tokens: token_axes, names.memory_mask: mask_axes, names.logits: token_axes, **axes})
    return specs


def graph_specs(model: AsrModel, names: AsrNames = NAMES) -> dict[str, GraphSpec]:
    """Wrapper, example inputs, names and dynamic axes of every graph this model has (batch 2)."""
    return _encoder_specs(model, names, 2) | _decoder_specs(model, names, 2)


def export_asr_onnx(bundle: AsrBundle, out_dir: Path, post: PostProcess = PostProcess(),
                    prefix: str = "asr") -> dict[str, Any]:
    """Write every ASR graph into ``out_dir``; returns the model's manifest entry (``models.asr``)."""
    from tokenspeech.asr.recognizer import RecognizerOptions

    model = bundle.model.eval()
    config = model.config
    graphs = export_specs(graph_specs(model), out_dir, prefix, post)
    defaults = RecognizerOptions()
    return {
        "kind": "asr", "names": NAMES.to_json(), "graphs": graphs, "config": config.to_json(),
        "decoders": list(config.decoders), "vocabulary": bundle.vocabulary.to_json(),
        "phoneme_vocabulary": bundle.phonemes.to_json() if bundle.phonemes else None,
        "mel": bundle.mel.to_json(), "sample_rate": bundle.mel.sample_rate, "frame_seconds": FRAME_SECONDS,
        "subsampling": SUBSAMPLING, "subsampling_context": SUBSAMPLING_CONTEXT,
        "layers": {"encoder": config.encoder_layers, "parallel": config.decoder_layers, "ar": config.ar_layers},
        "heads": config.heads, "head_dim": config.dim // config.heads, "dim": config.dim,
        "conv_cache": config.conv_kernel - 1,
        "streaming": {"left_chunks": [0]},  # the chunk graph keeps all left context
        "decoding": {"decoder": defaults.decoder, "beam_size": defaults.beam_size, "chunk": defaults.chunk,
                     "left_chunks": defaults.left_chunks, "max_tokens_per_second": defaults.max_tokens_per_second,
                     "tail_threshold": defaults.tail_threshold},
        "card": {k: v for k, v in bundle.card.items() if k in ("training", "metrics")},
    }
