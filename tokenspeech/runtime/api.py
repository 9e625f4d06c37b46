"""The runtime's front door: ``load(dir)`` -> :class:`Runtime`, which builds a synthesizer, a recognizer, a codec.

The objects it returns are the library's own pipelines
(:class:`tokenspeech.tts.pipeline.Synthesizer`,
:class:`tokenspeech.asr.engine.AsrRecognizer`) over ONNX Runtime backends,
so options, results and streaming behave exactly as on PyTorch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenspeech.runtime.manifest import ExportDirectory
from tokenspeech.runtime.sessions import RuntimeOptions

if TYPE_CHECKING:
    from tokenspeech.asr.engine import AsrRecognizer, RecognizerOptions
    from tokenspeech.runtime.codec import OnnxCodec
    from tokenspeech.tts.pipeline import Synthesizer

logger = logging.getLogger(__name__)


class Runtime:
    """An opened export directory plus the session options every model of it uses."""

    def __init__(self, export: ExportDirectory, options: RuntimeOptions = RuntimeOptions()) -> None:
        self.export = export
        self.options = options

    @property
    def kinds(self) -> tuple[str, ...]:
        """The models in the export: some of ``codec``, ``tts``, ``asr``."""
        return self.export.kinds

    def codec(self) -> OnnxCodec:
        from tokenspeech.runtime.codec import OnnxCodec

        return OnnxCodec(self.export, self.options)

    def synthesizer(self, phonemizer: Callable[[str], str] | None = None) -> Synthesizer:
        """Text to speech over the exported TTS model and codec (phonemes through libespeak-ng by default)."""
        from tokenspeech.runtime.tts import OnnxTtsBackend
        from tokenspeech.tts.pipeline import Synthesizer

        backend = OnnxTtsBackend(self.export, self.options)
        return Synthesizer(backend.info, self.codec(), phonemizer, backend=backend)

    def recognizer(self, options: RecognizerOptions | None = None,
                   lm: str | Path | None = None) -> AsrRecognizer:
        """Speech recognition over the exported ASR model (decoding defaults from the manifest unless given).

        ``lm``: the language model of the ``ctc``, ``ar`` and ``paraformer`` searches (default: the one shipped with
        tokenspeech; ``"none"``: none, so ``ctc`` is greedy).
        """
        from tokenspeech.asr.engine import LM_DECODERS, AsrRecognizer, RecognizerOptions
        from tokenspeech.asr.lm import load_lm
        from tokenspeech.runtime.asr import OnnxAsrBackend

        backend = OnnxAsrBackend(self.export, self.options)
        if options is None:
            defaults = self.export.model("asr")["decoding"]
            options = RecognizerOptions(**{k: v for k, v in defaults.items()
                                           if k in RecognizerOptions.__dataclass_fields__})
        language_model = load_lm(lm, backend.vocabulary) if options.decoder in LM_DECODERS else None
        return AsrRecognizer(backend, backend.vocabulary, backend.mel, options, language_model)


def load(path: str | Path, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
    """Open the export directory ``path`` (written by ``tokenspeech export``)."""
    return Runtime(ExportDirectory.open(path), options)
