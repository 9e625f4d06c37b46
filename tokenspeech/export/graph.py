"""Export one wrapper module to one ONNX file, check it, describe its inputs and outputs; optional int8 / fp16.

Every exporter (codec, TTS, ASR) goes through :func:`export_graph`, so the
opset, the exporter flags and the manifest entry format are the same for all.
The legacy TorchScript exporter is used (``dynamo=False``); it can silently
freeze an axis, so the tests run every graph at shapes other than the
export shapes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tokenspeech.errors import ConfigError
from tokenspeech.export.manifest import OPSET
from tokenspeech.models.transformer import LayerCache

logger = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)


@dataclass(frozen=True)
class GraphSpec:
    """What to trace: ``module(*args)`` with these input/output names and dynamic axes (name -> {axis: label})."""

    module: nn.Module
    args: tuple[Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]


@dataclass(frozen=True)
class PostProcess:
    """Weight compression applied after export; I/O stays float32 either way."""

    quantize: str | None = None  # "int8": dynamic quantisation of MatMul/Gemm weights
    fp16: bool = False  # float16 weights and compute inside, float32 inputs and outputs

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise ConfigError(f"unknown quantization {self.quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
        if self.quantize and self.fp16:
            raise ConfigError("choose either --quantize int8 or --fp16, not both")


def describe(names: list[str], tensors: list[Tensor], dynamic: dict[str, dict[int, str]]) -> list[dict[str, Any]]:
    """Manifest entries ``{name, dtype, shape}``; dynamic axes get their label instead of the traced size."""
    described = []
    for name, tensor in zip(names, tensors):
        axes = dynamic.get(name, {})
        shape = [axes.get(i, size) for i, size in enumerate(tensor.shape)]
        described.append({"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": shape})
    return described


def export_graph(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]], post: PostProcess = PostProcess()) -> dict[str, Any]:
    """Trace, write ``path``, run ``onnx.checker``, apply ``post``; returns the manifest entry of the graph."""
    import onnx

    _register_symbolics()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about shape checks and Python-side constants; the tests run other shapes.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        results = module(*args)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    _post_process(path, post)
    results = list(results) if isinstance(results, tuple) else [results]
    # the exporter drops inputs the outputs do not depend on (e.g. the memory of a one-layer context graph)
    kept = {i.name for i in graph.graph.input}
    described = [d for d in describe(inputs, list(args), dynamic) if d["name"] in kept]
    return {"file": path.name, "inputs": described, "outputs": describe(outputs, results, dynamic)}


def _expm1(g: Any, x: Any) -> Any:
    one = g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Sub", g.op("Exp", x), g.op("CastLike", one, x))


def _diff(g: Any, x: Any, n: Any, dim: Any, prepend: Any, append: Any) -> Any:
    """``torch.diff`` (first difference, optional prepend/append) as Concat + two Slices + Sub."""
    from torch.onnx import symbolic_helper

    if symbolic_helper._parse_arg(n, "i") != 1:
        raise ConfigError("only first differences (torch.diff n=1) can be exported")
    axis = symbolic_helper._parse_arg(dim, "i")
    parts = [p for p in (prepend, x, append) if not symbolic_helper._is_none(p)]
    joined = g.op("Concat", *parts, axis_i=axis) if len(parts) > 1 else x

    def const(value: int) -> Any:
        return g.op("Constant", value_t=torch.tensor([value], dtype=torch.long))

    big = 2**62
    later = g.op("Slice", joined, const(1), const(big), const(axis))
    earlier = g.op("Slice", joined, const(0), const(-1), const(axis))
    return g.op("Sub", later, earlier)


def _searchsorted(g: Any, sorted_sequence: Any, values: Any, out_int32: Any, right: Any, side: Any = None,
                  sorter: Any = None) -> Any:
    """``torch.searchsorted`` over the last axis of ``[..., N]`` for ``[..., F]``: count of entries below (or at)."""
    from torch.onnx import symbolic_helper

    if sorter is not None and not symbolic_helper._is_none(sorter):
        raise ConfigError("torch.searchsorted with a sorter cannot be exported")
    at_or_below = symbolic_helper._parse_arg(right, "b") or (
        side is not None and not symbolic_helper._is_none(side) and symbolic_helper._parse_arg(side, "s") == "right")
    table = g.op("Unsqueeze", sorted_sequence, g.op("Constant", value_t=torch.tensor([-2])))  # [..., 1, N]
    queries = g.op("Unsqueeze", values, g.op("Constant", value_t=torch.tensor([-1])))  # [..., F, 1]
    hits = g.op("LessOrEqual" if at_or_below else "Less", table, queries)
    counts = g.op("Cast", hits, to_i=torch.onnx.TensorProtoDataType.INT64)
    return g.op("ReduceSum", counts, g.op("Constant", value_t=torch.tensor([-1])), keepdims_i=0)


def _register_symbolics() -> None:
    """Ops ONNX lacks, used by durations and length regulation: ``expm1`` (as ``exp(x) - 1``, 1e-7 apart), ``diff``,
    ``searchsorted``."""
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::diff", _diff, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::searchsorted", _searchsorted, OPSET)


def export_spec(spec: GraphSpec, path: Path, post: PostProcess = PostProcess()) -> dict[str, Any]:
    return export_graph(spec.module, spec.args, path, spec.inputs, spec.outputs, spec.dynamic, post)


def export_specs(specs: dict[str, GraphSpec], out_dir: Path, prefix: str,
                 post: PostProcess = PostProcess()) -> dict[str, Any]:
    """Write ``out_dir/<prefix>_<graph>.onnx`` for every spec; returns graph -> manifest entry."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for graph, spec in specs.items():
        graphs[graph] = export_spec(spec, out_dir / f"{prefix}_{graph}.onnx", post)
        logger.info("exported %s", out_dir / graphs[graph]["file"])
    return graphs


def cache_pairs(flat: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
    """Graph I/O ``(key.0, value.0, key.1, value.1, ...)`` -> ``[(key, value)]`` per layer."""
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def layer_caches(flat: tuple[Tensor, ...]) -> list[LayerCache]:
    """Graph I/O ``(key.0, value.0, ...)`` -> one :class:`LayerCache` per layer."""
    return [LayerCache(k, v) for k, v in cache_pairs(flat)]


def flat_caches(caches: list[LayerCache]) -> tuple[Tensor, ...]:
    """The inverse of :func:`layer_caches`: ``(key.0, value.0, key.1, value.1, ...)``."""
    return tuple(t for c in caches for t in (c.key, c.value))


def _sort_nodes(graph: Any) -> None:
    """Reorder ``graph.node`` topologically (the fp16 converter appends its input casts at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(name in ready for name in n.input)]
        if not runnable:
            raise ConfigError("the fp16 graph has a cycle or an undefined input; export without --fp16")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if all(n is not r for r in runnable)]
    del graph.node[:]
    graph.node.extend(ordered)


def _post_process(path: Path, post: PostProcess) -> None:
    """Rewrite ``path`` in place with int8 or fp16 weights (then check it again)."""
    import onnx

    if post.quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_name(path.stem + ".int8.onnx")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        tmp.replace(path)
    elif post.fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        _sort_nodes(model.graph)
        onnx.save(model, str(path))
    else:
        return
    onnx.checker.check_model(onnx.load(str(path)))
    logger.debug("post-processed %s (%s)", path, post)
