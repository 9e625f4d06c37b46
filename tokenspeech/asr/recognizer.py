"""The recognition pipeline on PyTorch: :class:`TorchRecognizer` = :class:`AsrRecognizer` over :class:`TorchAsrBackend`.

The pipeline itself (batching, decoders, word times, streaming sessions)
lives in :mod:`tokenspeech.asr.engine` and is shared with the ONNX Runtime
backend (:mod:`tokenspeech.runtime`); this module only builds it from a
loaded :class:`AsrBundle`.
"""

from __future__ import annotations

import logging

from tokenspeech.asr.engine import AsrRecognizer, RecognizerOptions, StreamingSession
from tokenspeech.asr.model_io import AsrBundle, load_asr_model, save_asr_model
from tokenspeech.asr.torch_backend import TorchAsrBackend

logger = logging.getLogger(__name__)

__all__ = ["RecognizerOptions", "StreamingSession", "TorchRecognizer", "load_asr_model", "save_asr_model"]


class TorchRecognizer(AsrRecognizer):
    """Batch recogniser over a loaded :class:`AsrBundle` (PyTorch modules)."""

    def __init__(self, bundle: AsrBundle, options: RecognizerOptions = RecognizerOptions()) -> None:
        bundle.model.require(options.decoder)
        super().__init__(TorchAsrBackend(bundle.model, bundle.mel), bundle.vocabulary, bundle.mel, options)
        self.bundle = bundle
        self.model = bundle.model.eval()

    @classmethod
    def load(cls, path: str | None = None, options: RecognizerOptions = RecognizerOptions()) -> TorchRecognizer:
        return cls(load_asr_model(path), options)
