"""ONNX export of EnCodec 24 kHz as two fixed-size streaming step graphs.

Why fixed-size chunks: the legacy exporter (opset 17) reproduces EnCodec
exactly but silently freezes the time axis at the traced length, and the
dynamo exporter fails on the LSTM with a dynamic time axis. So each graph
takes one chunk of ``chunk_frames`` frames (default 75 = 1 s) and the
streaming state of :class:`tokenspeech.codecs.encodec.EncodecStreamState`
as extra inputs and outputs. Feeding the chunks of a longer signal in order,
with the state outputs of one call as the state inputs of the next,
reproduces offline PyTorch processing of the whole signal (the model is
causal, so zero-padding the last chunk and trimming its output is exact).
The batch axis and, for the decoder, the codebook axis ``K`` are dynamic.

Graphs (names are defined here once and written to the manifest):

- encoder: ``wav [B, 1, chunk_samples]`` float32, ``started [B]`` bool,
  ``state_in_<i>`` -> ``codes [B, 32, chunk_frames]`` int64,
  ``state_out_<i>``. Lower bitrates keep the first K codebooks.
- decoder: ``codes [B, K, chunk_frames]`` int64, ``started [B]`` bool,
  ``state_in_<i>`` -> ``wav [B, 1, chunk_samples]`` float32,
  ``state_out_<i>``.

``started[b]`` is False on a stream's first chunk (zero states) and True
afterwards. The manifest (``encodec_onnx.json``) lists every name and state
shape (``"B"`` marks the batch axis); runtimes read names from it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenspeech.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from tokenspeech.codecs.encodec import EncodecTokenizer
    from tokenspeech.codecs.encodec_layers import StreamingSeanet

LOG = logging.getLogger(__name__)

MANIFEST_VERSION = 1
MANIFEST_FILE = "encodec_onnx.json"
ENCODER_FILE = "encodec_encoder.onnx"
DECODER_FILE = "encodec_decoder.onnx"
WAV = "wav"
CODES = "codes"
STARTED = "started"
STATE_IN = "state_in_{}"
STATE_OUT = "state_out_{}"
BATCH = "B"
CODEBOOKS = "K"
DEFAULT_CHUNK_FRAMES = 75
OPSET = 17


@dataclass(frozen=True)
class StepGraph:
    """One exported step graph: file name, ordered I/O names and state shapes (``"B"`` = batch axis)."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    state_inputs: tuple[str, ...]
    state_outputs: tuple[str, ...]
    state_shapes: tuple[tuple[int | str, ...], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepGraph:
        return cls(file=data["file"], inputs=tuple(data["inputs"]), outputs=tuple(data["outputs"]),
                   state_inputs=tuple(data["state_inputs"]), state_outputs=tuple(data["state_outputs"]),
                   state_shapes=tuple(tuple(shape) for shape in data["state_shapes"]))


@dataclass(frozen=True)
class EncodecOnnxManifest:
    """What a runtime needs to drive the two graphs; saved as ``encodec_onnx.json`` beside them."""

    format_version: int
    codec: dict[str, Any]
    chunk_frames: int
    chunk_samples: int
    encoder_codebooks: int
    opset: int
    encoder: StepGraph
    decoder: StepGraph

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> EncodecOnnxManifest:
        """Read the manifest in ``directory``; raises :class:`ModelLoadError` when missing or foreign."""
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["format_version"] != MANIFEST_VERSION:
                raise ModelLoadError(f"{path}: manifest version {data['format_version']} is not supported "
                                     f"(expected {MANIFEST_VERSION}); re-export")
            return cls(format_version=data["format_version"], codec=data["codec"],
                       chunk_frames=data["chunk_frames"], chunk_samples=data["chunk_samples"],
                       encoder_codebooks=data["encoder_codebooks"], opset=data["opset"],
                       encoder=StepGraph.from_json(data["encoder"]), decoder=StepGraph.from_json(data["decoder"]))
        except FileNotFoundError:
            raise ModelLoadError(f"{path} not found: export with tokenspeech.export.encodec.export_encodec") from None
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f"{path}: not an EnCodec ONNX manifest ({error!r})") from None


def _step_graph(file: str, data_in: str, data_out: str, seanet: StreamingSeanet) -> StepGraph:
    """Names and state shapes of one graph, read from the streaming network (batch axis marked)."""
    shapes = []
    for one, two in zip(seanet.init_state(1), seanet.init_state(2)):
        shape: list[int | str] = list(one.shape)
        for axis, (a, b) in enumerate(zip(one.shape, two.shape)):
            if a != b:
                shape[axis] = BATCH
        shapes.append(tuple(shape))
    state_in = tuple(STATE_IN.format(i) for i in range(len(shapes)))
    state_out = tuple(STATE_OUT.format(i) for i in range(len(shapes)))
    return StepGraph(file=file, inputs=(data_in, STARTED) + state_in, outputs=(data_out,) + state_out,
                     state_inputs=state_in, state_outputs=state_out, state_shapes=tuple(shapes))


def _encoder_step(tokenizer: EncodecTokenizer) -> nn.Module:
    from torch import nn

    class EncoderStep(nn.Module):
        """``(wav, started, *state) -> (codes, *state)`` over all codebooks."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.quantizer = tokenizer.encoder, tokenizer.quantizer
            self.codebooks = tokenizer.info.num_codebooks

        def forward(self, wav: Tensor, started: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            latent, new_state = self.encoder(wav, state, started)
            return (self.quantizer.encode(latent, self.codebooks),) + new_state

    return EncoderStep().eval()


def _decoder_step(tokenizer: EncodecTokenizer) -> nn.Module:
    from torch import nn

    class DecoderStep(nn.Module):
        """``(codes, started, *state) -> (wav, *state)``."""

        def __init__(self) -> None:
            super().__init__()
            self.decoder, self.quantizer = tokenizer.decoder, tokenizer.quantizer

        def forward(self, codes: Tensor, started: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            wav, new_state = self.decoder(self.quantizer.decode(codes), state, started)
            return (wav,) + new_state

    return DecoderStep().eval()


def _dynamic_axes(graph: StepGraph, data_axes: dict[int, str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {graph.inputs[0]: data_axes, graph.outputs[0]: {0: BATCH},
                                       STARTED: {0: BATCH}}
    for name_in, name_out, shape in zip(graph.state_inputs, graph.state_outputs, graph.state_shapes):
        axis = shape.index(BATCH)
        axes[name_in] = axes[name_out] = {axis: BATCH}
    return axes


def _export_graph(module: nn.Module, example: tuple[Tensor, ...], graph: StepGraph,
                  data_axes: dict[int, str], path: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints taken from shapes: intended here
        torch.onnx.export(module, example, str(path), input_names=list(graph.inputs),
                          output_names=list(graph.outputs), dynamic_axes=_dynamic_axes(graph, data_axes),
                          opset_version=OPSET, dynamo=False)


def export_encodec(tokenizer: EncodecTokenizer, out_dir: str | Path,
                   chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> EncodecOnnxManifest:
    """Write the encoder and decoder step graphs and their manifest to ``out_dir``.

    ``chunk_frames`` must be at least ``tokenizer.min_exact_first_frames`` (7)
    so that a stream's first chunk matches offline processing.
    """
    import torch

    if chunk_frames < tokenizer.min_exact_first_frames:
        raise ConfigError(f"chunk_frames must be >= {tokenizer.min_exact_first_frames} for exact streaming, "
                          f"got {chunk_frames}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = tokenizer.info
    samples = chunk_frames * info.hop_length
    encoder = _step_graph(ENCODER_FILE, WAV, CODES, tokenizer.encoder)
    decoder = _step_graph(DECODER_FILE, CODES, WAV, tokenizer.decoder)
    started = torch.zeros(1, dtype=torch.bool)
    wav = torch.zeros(1, 1, samples)
    _export_graph(_encoder_step(tokenizer), (wav, started, *tokenizer.encoder.init_state(1)), encoder,
                  {0: BATCH}, out / ENCODER_FILE)
    codes = torch.zeros(1, info.num_codebooks, chunk_frames, dtype=torch.long)
    _export_graph(_decoder_step(tokenizer), (codes, started, *tokenizer.decoder.init_state(1)), decoder,
                  {0: BATCH, 1: CODEBOOKS}, out / DECODER_FILE)
    manifest = EncodecOnnxManifest(format_version=MANIFEST_VERSION, codec=info.to_json(),
                                   chunk_frames=chunk_frames, chunk_samples=samples,
                                   encoder_codebooks=info.num_codebooks, opset=OPSET, encoder=encoder,
                                   decoder=decoder)
    manifest.save(out)
    LOG.info("exported EnCodec step graphs (%d-frame chunks) to %s", chunk_frames, out)
    return manifest
