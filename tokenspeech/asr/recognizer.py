"""The recognition pipeline on PyTorch: :class:`TorchRecognizer` = :class:`AsrRecognizer` over :class:`TorchAsrBackend`.

The pipeline itself (batching, decoders, word times, streaming sessions)
lives in :mod:`tokenspeech.asr.engine` and is shared with the ONNX Runtime
backend (:mod:`tokenspeech.runtime`); this module only builds it from a
loaded :class:`AsrBundle`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tokenspeech.asr.engine import AsrRecognizer, RecognizerOptions, StreamingSession
from tokenspeech.asr.lm import load_lm
from tokenspeech.asr.model_io import AsrBundle, load_asr_model, save_asr_model
from tokenspeech.asr.torch_backend import TorchAsrBackend
from tokenspeech.decoding.ctc import TokenLM

logger = logging.getLogger(__name__)

__all__ = ["RecognizerOptions", "StreamingSession", "TorchRecognizer", "load_asr_model", "save_asr_model"]


class TorchRecognizer(AsrRecognizer):
    """Batch recogniser over a loaded :class:`AsrBundle` (PyTorch modules)."""

    def __init__(self, bundle: AsrBundle, options: RecognizerOptions = RecognizerOptions(),
                 lm: TokenLM | None = None) -> None:
        """``lm``: the character LM of CTC beam search (:func:`tokenspeech.asr.lm.load_lm`); None: greedy CTC."""
        bundle.model.require(options.decoder)
        super().__init__(TorchAsrBackend(bundle.model, bundle.mel), bundle.vocabulary, bundle.mel, options, lm)
        self.bundle = bundle
        self.model = bundle.model.eval()

    @classmethod
    def load(cls, path: str | None = None, options: RecognizerOptions = RecognizerOptions(),
             lm: str | Path | None = None) -> TorchRecognizer:
        """The model at ``path`` (default: shipped) with the LM at ``lm`` (default: shipped; ``"none"``: no LM)."""
        bundle = load_asr_model(path)
        return cls(bundle, options, load_lm(lm, bundle.vocabulary))
