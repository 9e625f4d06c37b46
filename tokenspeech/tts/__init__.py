"""Speech synthesis: text -> phonemes -> codec tokens -> audio (AR, NAR and semi-AR decoders).

Public API (imported lazily, so ``tokenspeech --help`` never loads torch)::

    from tokenspeech.tts import Synthesizer, SynthesisOptions
    synth = Synthesizer.load()                        # tokenspeech/assets/tts.* + tscodec.*
    result = synth.synthesize("Hello there.", SynthesisOptions(voice="joe", decoder="nar", seed=1))
    for chunk in synth.stream(long_text, SynthesisOptions(decoder="semiar")):
        play(chunk.audio)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Synthesizer": "tokenspeech.tts.pipeline",
    "SynthesisOptions": "tokenspeech.tts.pipeline",
    "AudioResult": "tokenspeech.tts.pipeline",
    "AudioChunk": "tokenspeech.tts.pipeline",
    "DECODERS": "tokenspeech.tts.pipeline",
    "load_tts_model": "tokenspeech.tts.model_io",
    "save_tts_model": "tokenspeech.tts.model_io",
}

__all__ = ["DECODERS", "AudioChunk", "AudioResult", "SynthesisOptions", "Synthesizer", "load_tts_model",
           "save_tts_model"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tokenspeech.tts' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
