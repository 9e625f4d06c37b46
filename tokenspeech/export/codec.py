"""Export tscodec (:class:`tokenspeech.models.codec.CodecModel`) to ONNX.

Four graphs (opset 17, dynamic batch and time axes):

- ``encoder_step``: ``wav [B, 1, T]`` + encoder state -> ``codes [B, K, T / hop]`` + new state
- ``decoder_step``: ``codes [B, k, F]`` (any ``k <= K``) + decoder state -> ``wav [B, 1, F hop]`` + new state
- ``encoder`` / ``decoder``: the offline passes (zero initial state), same tensors without state

State tensors are named ``state_in.<name>`` / ``state_out.<name>`` where
``<name>`` comes from :func:`tokenspeech.models.codec.flatten_state`
(``analysis``, ``fine.0``, ..., ``overlap``); every state has a dynamic batch
axis only. ``T`` must be a multiple of ``hop_length``. The names live only in
:class:`tokenspeech.export.manifest.CodecGraphNames`; ``<name>.onnx.json`` beside the graphs (the manifest)
lists every input and output with its shape, so a runtime never retypes them.

The legacy TorchScript exporter is used (``dynamo=False``); tests run the
graphs at lengths other than the export length, since that exporter can
silently freeze an axis.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokenspeech.export.graph import PostProcess, export_graph
from tokenspeech.export.manifest import OPSET, CodecGraphNames
from tokenspeech.models.codec import CodecModel, flatten_state, unflatten_state

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


GRAPH_NAMES = CodecGraphNames()


class EncoderStepGraph(nn.Module):
    """``(wav, *state) -> (codes, *state)`` around :meth:`CodecModel.encode_step` (all K codebooks)."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model
        self.template = model.init_encode_state(1)

    def forward(self, wav: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        codes, new_state = self.model.encode_step(wav, unflatten_state(self.template, state))
        return (codes, *(tensor for _, tensor in flatten_state(new_state)))


class DecoderStepGraph(nn.Module):
    """``(codes, *state) -> (wav, *state)`` around :meth:`CodecModel.decode_step`."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model
        self.template = model.init_decode_state(1)

    def forward(self, codes: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        wav, new_state = self.model.decode_step(codes, unflatten_state(self.template, state))
        return (wav, *(tensor for _, tensor in flatten_state(new_state)))


class EncoderGraph(nn.Module):
    """``wav -> codes`` (offline, all K codebooks)."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, wav: Tensor) -> Tensor:
        return self.model.encode(wav)


class DecoderGraph(nn.Module):
    """``codes -> wav`` (offline)."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes)


@dataclass(frozen=True)
class CodecOnnxExport:
    """Where an export went: graph name -> path, and the manifest."""

    graphs: dict[str, Path]
    manifest: Path
    described: dict[str, Any] = field(default_factory=dict)  # graph -> manifest entry (file, inputs, outputs)


def _step_specs(model: CodecModel, names: CodecGraphNames, batch: int, frames: int) -> dict[str, tuple]:
    hop = model.config.hop_length
    wav = 0.1 * torch.randn(batch, 1, frames * hop)
    codes = torch.randint(model.config.codebook_size, (batch, model.config.num_codebooks, frames))
    enc_state, dec_state = model.init_encode_state(batch), model.init_decode_state(batch)
    wav_axes = {0: "batch", 2: "samples"}
    codes_axes = {0: "batch", 1: "codebooks", 2: "frames"}
    enc_states = {n: {0: "batch"} for n in names.state_inputs(enc_state) + names.state_outputs(enc_state)}
    dec_states = {n: {0: "batch"} for n in names.state_inputs(dec_state) + names.state_outputs(dec_state)}
    enc_codes_axes = {0: "batch", 2: "frames"}  # the encoder always emits all K codebooks
    return {
        names.encoder_step: (EncoderStepGraph(model), (wav, *(t for _, t in flatten_state(enc_state))),
                             [names.wav, *names.state_inputs(enc_state)],
                             [names.codes, *names.state_outputs(enc_state)],
                             {names.wav: wav_axes, names.codes: enc_codes_axes, **enc_states}),
        names.decoder_step: (DecoderStepGraph(model), (codes, *(t for _, t in flatten_state(dec_state))),
                             [names.codes, *names.state_inputs(dec_state)],
                             [names.wav, *names.state_outputs(dec_state)],
                             {names.codes: codes_axes, names.wav: wav_axes, **dec_states}),
        names.encoder: (EncoderGraph(model), (wav,), [names.wav], [names.codes],
                        {names.wav: wav_axes, names.codes: enc_codes_axes}),
        names.decoder: (DecoderGraph(model), (codes,), [names.codes], [names.wav],
                        {names.codes: codes_axes, names.wav: wav_axes}),
    }


def export_codec_onnx(model: CodecModel, out_dir: Path, prefix: str = "tscodec", offline: bool = True,
                      card: dict[str, Any] | None = None, post: PostProcess = PostProcess()) -> CodecOnnxExport:
    """Write the step graphs (and the offline graphs if ``offline``) plus ``<prefix>.onnx.json``.

    ``card`` (e.g. the model card of a saved codec) is copied into the
    manifest under ``"card"``. Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    names = GRAPH_NAMES
    specs = _step_specs(model, names, batch=2, frames=3)
    wanted = [names.encoder_step, names.decoder_step] + ([names.encoder, names.decoder] if offline else [])
    graphs: dict[str, Path] = {}
    described: dict[str, Any] = {}
    for graph in wanted:
        module, args, inputs, outputs, dynamic = specs[graph]
        path = out_dir / names.graph_file(prefix, graph)
        described[graph] = export_graph(module, args, path, inputs, outputs, dynamic, post)
        graphs[graph] = path
        logger.info("exported %s", path)
    manifest = out_dir / f"{prefix}.onnx.json"
    config = model.config
    manifest.write_text(json.dumps({
        "format_version": MANIFEST_VERSION, "opset": OPSET, "architecture": config.to_json(),
        "hop_length": config.hop_length, "output_delay": config.output_delay,
        "samples_per_step_multiple_of": config.hop_length, "graphs": described, "card": card or {},
    }, indent=1))
    return CodecOnnxExport(graphs, manifest, described)
