"""ONNX Runtime sessions: provider choice, thread counts, and runs with optional I/O binding.

Provider rule: ``cuda`` needs onnxruntime-gpu and a GPU, and fails with a
:class:`ModelLoadError` that names CUDA when either is missing; ``auto``
takes CUDA when onnxruntime offers it and otherwise CPU, and logs a warning
naming CUDA when a CUDA session silently came up on CPU; ``cpu`` is CPU. The
provider every session runs on is logged.

With I/O binding (default on CUDA, optional on CPU), outputs a caller names
in ``keep`` stay in the session's device memory as ``OrtValue`` s and can be
fed back as inputs: that is how the AR and streaming caches stay on the GPU
between steps. Everything else crosses as NumPy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenspeech.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are made; validated here, the one place."""

    provider: str = "auto"  # auto | cpu | cuda
    intra_op_threads: int = 0  # threads inside one op; 0 = onnxruntime's default
    inter_op_threads: int = 0  # threads across independent ops; 0 = onnxruntime's default
    io_binding: bool | None = None  # None = on for CUDA, off for CPU
    device_id: int = 0  # CUDA device

    def __post_init__(self) -> None:
        if self.provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("thread counts must be >= 0 (0 = onnxruntime's default)")
        if self.device_id < 0:
            raise ConfigError("device_id must be >= 0")


def choose_providers(options: RuntimeOptions, available: Iterable[str]) -> list[str]:
    """Execution providers for ``options`` given what onnxruntime offers; raises when CUDA is required but absent."""
    available = list(available)
    if options.provider == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if options.provider == "cuda":
        raise ModelLoadError(f"provider 'cuda' was requested but onnxruntime offers no {CUDA} (available: "
                             f"{', '.join(available) or 'none'}); install onnxruntime-gpu (pip install "
                             "'tokenspeech[gpu]') on a machine with an NVIDIA GPU, or use provider 'cpu'")
    return [CPU]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class Graph:
    """One ONNX graph of an export: a session plus the input/output names its manifest entry lists."""

    def __init__(self, path: Path, entry: dict[str, Any], options: RuntimeOptions) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.inputs = [item["name"] for item in entry["inputs"]]
        self.outputs = [item["name"] for item in entry["outputs"]]
        self.input_specs = {item["name"]: item for item in entry["inputs"]}
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = options.intra_op_threads
        settings.inter_op_num_threads = options.inter_op_threads
        providers = choose_providers(options, available_providers())
        provider_options = [{"device_id": options.device_id} if p == CUDA else {} for p in providers]
        try:
            self.session = ort.InferenceSession(str(self.path), settings, providers=providers,
                                                provider_options=provider_options)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable or invalid files
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load this graph ({error})") from error
        self.provider = self.session.get_providers()[0]
        self._check_provider(options, providers)
        self.device = "cuda" if self.provider == CUDA else "cpu"
        self.device_id = options.device_id if self.device == "cuda" else 0
        self.bind = options.io_binding if options.io_binding is not None else self.device == "cuda"
        session_inputs = {i.name for i in self.session.get_inputs()}
        if set(self.inputs) != session_inputs:
            raise ModelLoadError(f"{self.path}: the graph's inputs {sorted(session_inputs)} differ from the "
                                 f"manifest's {sorted(self.inputs)}; re-export the model")
        logger.info("%s runs on %s%s", self.path.name, self.provider, " with I/O binding" if self.bind else "")

    def _check_provider(self, options: RuntimeOptions, wanted: list[str]) -> None:
        if wanted[0] != CUDA or self.provider == CUDA:
            return
        message = (f"{self.path.name}: {CUDA} is installed but the session runs on {self.provider} "
                   "(no usable GPU or CUDA libraries)")
        if options.provider == "cuda":
            raise ModelLoadError(message + "; use provider 'cpu' or fix the CUDA installation")
        logger.warning("%s; continuing on CPU", message)

    def run(self, feeds: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
        """Run with ``feeds`` (NumPy or ``OrtValue``); outputs in ``keep`` stay on the device when binding.

        Feeds the graph does not take are ignored: the exporter drops inputs no
        output depends on, and the adapters feed every state they hold.
        """
        feeds = {name: value for name, value in feeds.items() if name in self.input_specs}
        if not self.bind:
            arrays = {name: host(value) for name, value in feeds.items()}
            return dict(zip(self.outputs, self.session.run(self.outputs, arrays)))
        keep = set(keep)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            if name in keep:
                binding.bind_output(name, self.device, self.device_id)
            else:
                binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {name: value if name in keep else value.numpy() for name, value in zip(self.outputs, values)}


def host(value: Any) -> np.ndarray:
    """A NumPy array of ``value`` (an array already, or an ``OrtValue`` copied from its device)."""
    return value if isinstance(value, np.ndarray) else value.numpy()
