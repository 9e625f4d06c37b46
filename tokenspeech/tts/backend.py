"""What the synthesis pipeline needs from a backend (PyTorch modules or ONNX Runtime sessions). Torch-free.

:class:`tokenspeech.tts.pipeline.Synthesizer` runs the same decoding
strategies over either :class:`tokenspeech.tts.torch_backend.TorchTtsBackend`
or :class:`tokenspeech.runtime.tts.OnnxTtsBackend`; each adapts its model to
the NumPy protocols of :mod:`tokenspeech.decoding` (``MaskedModel``,
``BlockModel``, ``StepModel``) and keeps its own state types.

Axes: N phonemes, F frames (25 Hz), D model dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.text.vocab import Vocabulary


@dataclass(frozen=True)
class Conditioning:
    """Frame-level conditioning of one sentence: ``cond [1, F, D]`` (backend array) and the durations behind it."""

    cond: Any  # torch.Tensor (PyTorch backend) or np.ndarray (ONNX backend)
    durations: np.ndarray  # [N] frames per phoneme (25 Hz)

    @property
    def frames(self) -> int:
        return int(self.cond.shape[1])


class TtsBackend(Protocol):
    """Text-to-conditioning plus factories of the three decoding adapters."""

    @property
    def num_codebooks(self) -> int:
        """Codebooks the model generates (the first K of the codec's)."""
        ...

    def condition(self, phonemes: np.ndarray, voice: int, rate: float = 1.0,
                  durations: np.ndarray | None = None) -> Conditioning:
        """``phonemes [N]`` ids -> conditioning; durations predicted (divided by ``rate``) unless given."""
        ...

    def masked(self) -> Any:
        """A ``MaskedModel`` with ``prepare(cond) -> state``."""
        ...

    def blocks(self) -> Any:
        """A ``BlockModel`` with ``prepare(cond, guidance) -> state``."""
        ...

    def ar(self) -> Any:
        """A ``StepModel`` with ``bos_id`` and ``prepare(cond) -> state``; ConfigError without an AR LM."""
        ...


class TtsModelInfo(Protocol):
    """What the pipeline reads from a model's card (``TtsBundle`` has it; so does an ONNX export)."""

    phonemes: Vocabulary
    voices: tuple[str, ...]
    codec: CodecInfo
    g2p_language: str

    @property
    def codebooks(self) -> int: ...
