"""``tokenspeech export``: resolve models by name or path, export every graph, write ``manifest.json``.

A directory may hold several models (``codec``, ``tts``, ``asr``); exporting
into a directory that already has a manifest replaces the entries of the
models exported now and keeps the others. A TTS model brings its codec
along, so the directory can synthesize on its own.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokenspeech.artifacts import artifact_paths, atomic_write
from tokenspeech.errors import ModelLoadError
from tokenspeech.export.graph import PostProcess
from tokenspeech.export.manifest import FORMAT_VERSION, MANIFEST_FILE, OPSET, CodecGraphNames

logger = logging.getLogger(__name__)

SHIPPED = ("tscodec", "tts", "asr")


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; :class:`PostProcess` validates the compression choice."""

    post: PostProcess = PostProcess()
    codec: Path | None = None  # the codec a TTS model's tokens belong to (default: the shipped tscodec)


def model_kind(model: str) -> str:
    """``codec``, ``tts`` or ``asr`` for a shipped name or a ``.safetensors`` / ``.json`` / stem path."""
    if model in SHIPPED:
        return "codec" if model == "tscodec" else model
    _, card = artifact_paths(model)
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{model}: not a shipped model ({', '.join(SHIPPED)}) and no readable model card "
                             f"{card} ({error})") from error
    if data.get("kind") in ("tts", "asr"):
        return data["kind"]
    if data.get("name") == "tscodec":
        return "codec"
    raise ModelLoadError(f"{card}: a model card of unknown kind; expected a tscodec, TTS or ASR card")


def _path(model: str) -> Path | None:
    return None if model in SHIPPED else Path(model)


def _codec_entry(codec: Any, out: Path, post: PostProcess) -> dict[str, Any]:
    from tokenspeech.export.codec import export_codec_onnx

    export = export_codec_onnx(codec.model, out, card=codec.card, post=post)
    config = codec.config
    return {"kind": "codec", "names": CodecGraphNames().to_json(), "graphs": export.described,
            "info": codec.info.to_json(), "architecture": config.to_json(), "sample_rate": config.sample_rate,
            "frame_rate": config.frame_rate, "hop_length": config.hop_length, "output_delay": config.output_delay,
            "card": {k: v for k, v in codec.card.items() if k in ("latency", "bitrates_kbps", "metrics", "training")}}


def _export_one(kind: str, model: str, out: Path, options: ExportOptions) -> dict[str, dict[str, Any]]:
    from tokenspeech.codecs.native import load_native_codec

    if kind == "codec":
        return {"codec": _codec_entry(load_native_codec(_path(model)), out, options.post)}
    if kind == "asr":
        from tokenspeech.asr.model_io import load_asr_model
        from tokenspeech.export.asr import export_asr_onnx

        return {"asr": export_asr_onnx(load_asr_model(_path(model)), out, options.post)}
    from tokenspeech.codecs.native import NAME
    from tokenspeech.export.tts import export_tts_onnx
    from tokenspeech.tts.model_io import load_tts_model

    bundle = load_tts_model(_path(model))
    if bundle.codec.name != NAME:
        raise ModelLoadError(f"the TTS model needs the {bundle.codec.name!r} codec; only {NAME!r} can be exported")
    codec = load_native_codec(options.codec)
    if codec.info.frame_rate != bundle.codec.frame_rate or codec.info.codebook_size != bundle.codec.codebook_size:
        raise ModelLoadError(f"the codec {options.codec or '(shipped)'} does not match the one the TTS model was "
                             f"trained on ({bundle.codec})")
    return {"tts": export_tts_onnx(bundle, out, options.post), "codec": _codec_entry(codec, out, options.post)}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    import tokenspeech

    return {"tokenspeech": tokenspeech.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _previous_models(manifest: Path) -> dict[str, Any]:
    if not manifest.is_file():
        return {}
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data.get("models", {}) if data.get("format_version") == FORMAT_VERSION else {}


def export_directory(models: list[str], out: Path, options: ExportOptions = ExportOptions()) -> Path:
    """Export ``models`` (shipped names or paths) into ``out``; returns the path of ``manifest.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_FILE
    entries = _previous_models(manifest)
    kinds = [(model_kind(model), model) for model in models]
    # an explicitly named codec wins over the one a TTS model brings along
    for kind, model in sorted(kinds, key=lambda pair: pair[0] == "codec"):
        entries.update(_export_one(kind, model, out, options))
        logger.info("exported %s (%s) into %s", model, kind, out)
    data = {"format_version": FORMAT_VERSION, "opset": OPSET, "versions": _versions(),
            "quantize": options.post.quantize, "fp16": options.post.fp16,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "models": entries}
    atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8"))
    return manifest
