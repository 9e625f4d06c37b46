"""tscodec on ONNX Runtime: the :class:`tokenspeech.codecs.base.AudioTokenizer` seam over NumPy arrays.

Same contract as :class:`tokenspeech.codecs.native.NativeCodec`:
``encode(wav [B, 1, T]) -> codes [B, k, ceil(T / hop)]`` (zero-padded to whole
frames), ``decode(codes [B, k, F]) -> wav [B, 1, F hop]`` for any ``k``, and
streaming steps over whole frames whose state is the graphs' explicit state
tensors (``state_in.*`` / ``state_out.*`` in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.errors import ConfigError
from tokenspeech.runtime.manifest import ExportDirectory
from tokenspeech.runtime.sessions import Graph, RuntimeOptions

_DTYPES = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


@dataclass(frozen=True)
class OnnxCodecState:
    """Streaming state of a batch of streams: graph input name -> array (or device value)."""

    tensors: dict[str, Any]


def zeros_for(graph: Graph, names: list[str], batch: int) -> dict[str, np.ndarray]:
    """Zero tensors for the inputs ``names`` of ``graph``: the ``batch`` axis sized, every other axis as exported.

    A dynamic axis other than ``batch`` starts empty (e.g. a cache with no past positions).
    """
    zeros = {}
    for name in names:
        spec = graph.input_specs[name]
        shape = [batch if axis == "batch" else (0 if isinstance(axis, str) else axis) for axis in spec["shape"]]
        zeros[name] = np.zeros(shape, dtype=_DTYPES[spec["dtype"]])
    return zeros


class OnnxCodec:
    """An exported tscodec; see the module docstring."""

    def __init__(self, export: ExportDirectory, options: RuntimeOptions = RuntimeOptions()) -> None:
        entry = export.model("codec")
        self.names = export.names("codec")
        self.graphs = export.graphs("codec", options)
        self.info = CodecInfo.from_json(entry["info"])
        self.output_delay_samples = int(entry["output_delay"])

    def _codebooks(self, codebooks: int | None) -> int:
        k = self.info.num_codebooks if codebooks is None else codebooks
        if not isinstance(k, int) or not 1 <= k <= self.info.num_codebooks:
            raise ConfigError(f"{self.info.name}: codebooks must be an integer in 1..{self.info.num_codebooks}, "
                              f"got {codebooks!r}")
        return k

    def _wav(self, wav: Any) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ConfigError(f"{self.info.name}: expected mono audio [B, 1, T], got shape {wav.shape}")
        return wav

    def _codes(self, codes: Any) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.info.num_codebooks:
            raise ConfigError(f"{self.info.name}: expected codes [B, K, F] with 1 <= K <= "
                              f"{self.info.num_codebooks}, got shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.info.codebook_size):
            raise ConfigError(f"{self.info.name}: codes must be in [0, {self.info.codebook_size}), got "
                              f"{codes.min()}..{codes.max()}")
        return codes

    def _state_names(self, graph: str) -> list[str]:
        return [n for n in self.graphs[graph].inputs if n.startswith(self.names.state_in_prefix)]

    def _step(self, graph: str, name: str, value: np.ndarray, state: OnnxCodecState) -> tuple[np.ndarray,
                                                                                              OnnxCodecState]:
        session = self.graphs[graph]
        outputs = session.run({name: value, **state.tensors})
        new = {n.replace(self.names.state_out_prefix, self.names.state_in_prefix, 1): v
               for n, v in outputs.items() if n.startswith(self.names.state_out_prefix)}
        result = self.names.codes if graph == self.names.encoder_step else self.names.wav
        return outputs[result], OnnxCodecState(new)

    def encode(self, wav: Any, codebooks: int | None = None) -> np.ndarray:
        wav, k = self._wav(wav), self._codebooks(codebooks)
        wav = np.pad(wav, ((0, 0), (0, 0), (0, -wav.shape[-1] % self.info.hop_length)))
        codes = self.graphs[self.names.encoder].run({self.names.wav: wav})[self.names.codes]
        return codes[:, :k]

    def decode(self, codes: Any) -> np.ndarray:
        return self.graphs[self.names.decoder].run({self.names.codes: self._codes(codes)})[self.names.wav]

    def init_encode_state(self, batch_size: int) -> OnnxCodecState:
        graph = self.names.encoder_step
        return OnnxCodecState(zeros_for(self.graphs[graph], self._state_names(graph), batch_size))

    def encode_step(self, wav: Any, state: OnnxCodecState,
                    codebooks: int | None = None) -> tuple[np.ndarray, OnnxCodecState]:
        wav, k = self._wav(wav), self._codebooks(codebooks)
        if wav.shape[-1] % self.info.hop_length:
            raise ConfigError(f"{self.info.name}: streaming chunks must be whole frames (a multiple of "
                              f"{self.info.hop_length} samples), got {wav.shape[-1]}")
        codes, state = self._step(self.names.encoder_step, self.names.wav, wav, state)
        return codes[:, :k], state

    def init_decode_state(self, batch_size: int) -> OnnxCodecState:
        graph = self.names.decoder_step
        return OnnxCodecState(zeros_for(self.graphs[graph], self._state_names(graph), batch_size))

    def decode_step(self, codes: Any, state: OnnxCodecState) -> tuple[np.ndarray, OnnxCodecState]:
        return self._step(self.names.decoder_step, self.names.codes, self._codes(codes), state)
