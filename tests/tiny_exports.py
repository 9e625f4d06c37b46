"""A tiny codec + TTS + ASR saved as artifacts and exported to ONNX (shared by the export and runtime tests)."""

from __future__ import annotations

from pathlib import Path

from tiny_models import VOICES, tiny_asr_bundle, tiny_codec, tiny_tts_bundle

from tokenspeech.asr.model_io import save_asr_model
from tokenspeech.codecs.native import save_native_codec
from tokenspeech.export.directory import ExportOptions, export_directory
from tokenspeech.tts.model_io import save_tts_model


def save_tiny_models(models: Path) -> dict[str, Path]:
    """Write ``tscodec``, ``tts`` and ``asr`` artifacts (fp16 weights + cards) into ``models``."""
    codec = tiny_codec()
    save_native_codec(codec.model, codec.config, models / "tscodec")
    tts = tiny_tts_bundle()
    save_tts_model(tts.model, models / "tts", tts.phonemes, VOICES, codec.info)
    asr = tiny_asr_bundle()
    save_asr_model(asr.model, models / "asr", asr.vocabulary, asr.mel, asr.phonemes)
    return {name: models / f"{name}.safetensors" for name in ("tscodec", "tts", "asr")}


def export_tiny_models(models: Path, out: Path) -> dict[str, Path]:
    """Save the tiny models into ``models`` and export TTS (with its codec) and ASR into ``out``."""
    paths = save_tiny_models(models)
    export_directory([str(paths["tts"]), str(paths["asr"])], out, ExportOptions(codec=paths["tscodec"]))
    return paths
