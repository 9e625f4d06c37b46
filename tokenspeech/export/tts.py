"""Export a TTS model (:class:`tokenspeech.models.tts.TtsModel`) to ONNX: five graphs, names from :class:`TtsNames`.

- ``tts_text``: ``phonemes [B, N], voice [B], rate []`` -> ``hidden [B, N, D], durations [B, N]``
  (text encoder + duration predictor + :func:`predicted_durations`)
- ``tts_condition``: ``hidden, durations, voice`` -> ``cond [B, F, D]``
- ``tts_unconditional``: ``cond`` -> ``uncond [B, F, D]`` (classifier-free guidance input)
- ``tts_masked`` (NAR step): ``codes [B, K, F], cond, codebooks [G]`` -> ``logits [B, G, F, V]``
- ``tts_block`` (semi-AR step): ``codes [B, K, S], cond [B, S, D], codebooks, cache`` -> ``logits, cache``
- ``tts_ar_step`` (AR step, models with an AR LM): ``tokens [B, S], cond [B, S, D], cache`` -> ``logits [B, S, V], cache``

Caches are ``cache_in.<layer>.key|value [B, H, P, Dh]`` in and
``cache_out.<layer>.key|value [B, H, P + S, Dh]`` out. Negative codes are
masked positions (the graphs map them to the mask embedding), so a runtime
passes the decoding strategies' ``MASK`` as is. Whole-sentence passes use
full attention without a padding mask: the runtime runs one sentence at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokenspeech.export.graph import GraphSpec, PostProcess, export_specs, flat_caches, layer_caches
from tokenspeech.export.manifest import TtsNames, cache_names
from tokenspeech.models.tts import CodebookHeads, TtsModel, predicted_durations
from tokenspeech.tts.model_io import TtsBundle

NAMES = TtsNames()


def _unmask(codes: Tensor, mask_id: int) -> Tensor:
    return torch.where(codes < 0, torch.full_like(codes, mask_id), codes)


def _heads(heads: CodebookHeads, x: Tensor, codebooks: Tensor) -> Tensor:
    """:meth:`CodebookHeads.forward` with the codebooks as a tensor (a Gather in the graph, not a Python list)."""
    weight, bias = heads.weight.index_select(0, codebooks), heads.bias.index_select(0, codebooks)
    return torch.matmul(x[:, None], weight.transpose(1, 2)) + bias[None, :, None, :]


class TextGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, phonemes: Tensor, voice: Tensor, rate: Tensor) -> tuple[Tensor, Tensor]:
        hidden, log_durations = self.model.encode_text(phonemes, voice)
        return hidden, predicted_durations(log_durations, rate)


class ConditionGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden: Tensor, durations: Tensor, voice: Tensor) -> Tensor:
        # a tensor frame count keeps the frame axis dynamic (an int would be frozen by the tracer)
        frames = durations.sum(dim=1).max()
        cond, _ = self.model.condition(hidden, durations, voice, frames)  # type: ignore[arg-type]
        return cond


class UnconditionalGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.conditioner = model.conditioner

    def forward(self, cond: Tensor) -> Tensor:
        return self.conditioner.unconditional(cond)


class MaskedGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor, cond: Tensor, codebooks: Tensor) -> Tensor:
        hidden = self.model.codec(_unmask(codes, self.model.config.mask_id), cond)
        return _heads(self.model.codec.heads, hidden, codebooks)


class BlockGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor, cond: Tensor, codebooks: Tensor, *cache: Tensor) -> tuple[Tensor, ...]:
        codec = self.model.codec
        x = codec.inputs(_unmask(codes, self.model.config.mask_id), cond)
        hidden, new_cache = codec.transformer.step(x, layer_caches(cache))
        return (_heads(codec.heads, hidden, codebooks), *flat_caches(new_cache))


class ArStepGraph(nn.Module):
    def __init__(self, model: TtsModel) -> None:
        super().__init__()
        self.ar = model.ar

    def forward(self, tokens: Tensor, cond: Tensor, *cache: Tensor) -> tuple[Tensor, ...]:
        hidden, new_cache = self.ar.transformer.step(cond + self.ar.embed(tokens), layer_caches(cache))
        return (self.ar.head(hidden), *flat_caches(new_cache))


def _cache_args(layers: int, heads: int, head_dim: int, batch: int, past: int) -> tuple[Tensor, ...]:
    return tuple(torch.randn(batch, heads, past, head_dim) for _ in range(2 * layers))


def graph_specs(model: TtsModel, names: TtsNames = NAMES) -> dict[str, GraphSpec]:
    """Wrapper, example inputs, names and dynamic axes of every TTS graph (batch 2, sizes all distinct)."""
    config = model.config
    batch, phonemes, frames, step, past = 2, 5, 9, 3, 4
    head_dim = config.dim // config.heads
    ids = torch.randint(config.num_phonemes, (batch, phonemes))
    voice = torch.randint(config.num_voices, (batch,))
    hidden = torch.randn(batch, phonemes, config.dim)
    durations = torch.randint(1, 4, (batch, phonemes))
    cond = torch.randn(batch, frames, config.dim)
    codes = torch.randint(-1, config.codebook_size, (batch, config.num_codebooks, frames))
    codebooks = torch.arange(min(2, config.num_codebooks))
    b, n, f, s = {0: "batch"}, {0: "batch", 1: "phonemes"}, {0: "batch", 1: "frames"}, {0: "batch", 1: "steps"}
    cache_axes = {0: "batch", 2: "past"}
    specs = {
        names.text: GraphSpec(TextGraph(model), (ids, voice, torch.tensor(1.1)),
                              [names.phonemes, names.voice, names.rate], [names.hidden, names.durations],
                              {names.phonemes: n, names.voice: b, names.hidden: n, names.durations: n}),
        names.condition: GraphSpec(ConditionGraph(model), (hidden, durations, voice),
                                   [names.hidden, names.durations, names.voice], [names.cond],
                                   {names.hidden: n, names.durations: n, names.voice: b, names.cond: f}),
        names.unconditional: GraphSpec(UnconditionalGraph(model), (cond,), [names.cond], [names.uncond],
                                       {names.cond: f, names.uncond: f}),
        names.masked: GraphSpec(MaskedGraph(model), (codes, cond, codebooks),
                                [names.codes, names.cond, names.codebooks], [names.logits],
                                {names.codes: {0: "batch", 2: "frames"}, names.cond: f,
                                 names.codebooks: {0: "codebooks"},
                                 names.logits: {0: "batch", 1: "codebooks", 2: "frames"}}),
    }
    layers = config.codec_layers
    cache_in, cache_out = cache_names(names.cache_in, layers), cache_names(names.cache_out, layers)
    specs[names.block] = GraphSpec(
        BlockGraph(model), (codes[..., :step], cond[:, :step], codebooks,
                            *_cache_args(layers, config.heads, head_dim, batch, past)),
        [names.codes, names.cond, names.codebooks, *cache_in], [names.logits, *cache_out],
        {names.codes: {0: "batch", 2: "steps"}, names.cond: s, names.codebooks: {0: "codebooks"},
         names.logits: {0: "batch", 1: "codebooks", 2: "steps"},
         **{name: cache_axes for name in cache_in}, **{name: {0: "batch", 2: "total"} for name in cache_out}})
    if model.ar is not None:
        layers = config.ar_layers
        cache_in, cache_out = cache_names(names.cache_in, layers), cache_names(names.cache_out, layers)
        # two new positions, so the traced graph keeps the causal mask among new positions
        tokens = torch.randint(config.codebook_size + 1, (batch, 2))
        specs[names.ar_step] = GraphSpec(
            ArStepGraph(model), (tokens, cond[:, :2], *_cache_args(layers, config.heads, head_dim, batch, past)),
            [names.tokens, names.cond, *cache_in], [names.logits, *cache_out],
            {names.tokens: s, names.cond: s, names.logits: s,
             **{name: cache_axes for name in cache_in}, **{name: {0: "batch", 2: "total"} for name in cache_out}})
    return specs


def export_tts_onnx(bundle: TtsBundle, out_dir: Path, post: PostProcess = PostProcess(),
                    prefix: str = "tts") -> dict[str, Any]:
    """Write every TTS graph into ``out_dir``; returns the model's manifest entry (``models.tts``)."""
    from tokenspeech.tts.pipeline import (DEFAULT_DECODER, DEFAULT_FINE_GUIDANCE, DEFAULT_GUIDANCE, DEFAULT_STEPS,
                                          DEFAULT_TEMPERATURE, SynthesisOptions)

    model = bundle.model.eval()
    config = model.config
    graphs = export_specs(graph_specs(model), out_dir, prefix, post)
    defaults = SynthesisOptions()
    return {
        "kind": "tts", "names": NAMES.to_json(), "graphs": graphs, "config": config.to_json(),
        "layers": {"codec": config.codec_layers, "ar": config.ar_layers}, "heads": config.heads,
        "head_dim": config.dim // config.heads, "mask_id": config.mask_id,
        "phoneme_vocabulary": bundle.phonemes.to_json(), "voices": list(bundle.voices),
        "codec": {**bundle.codec.to_json(), "codebooks_used": config.num_codebooks},
        "g2p": {"engine": "espeak-ng", "language": bundle.g2p_language},
        "decoding": {"decoder": DEFAULT_DECODER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE,
                     "fine_guidance": DEFAULT_FINE_GUIDANCE, "voice": defaults.voice,
                     "temperature": DEFAULT_TEMPERATURE, "top_k": defaults.top_k,
                     "block_frames": defaults.block_frames, "fine_passes": defaults.fine_passes},
        "card": {k: v for k, v in bundle.card.items() if k in ("training", "metrics", "parameters")},
    }
