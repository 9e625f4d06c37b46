"""What a ``--models`` path holds: a model card (``x.safetensors`` + ``x.json``) or an ONNX export directory.

Torch-free and grpc-free: both backends and the registry ask here which
kinds of model (``tts``, ``asr``) a path serves.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenspeech.artifacts import artifact_paths
from tokenspeech.errors import ModelLoadError
from tokenspeech.export.manifest import MANIFEST_FILE

TTS, ASR = "tts", "asr"
SERVABLE = (TTS, ASR)


def is_export_dir(path: Path) -> bool:
    """True for a directory written by ``tokenspeech export`` (it has a manifest)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST_FILE).is_file()


def _card_path(path: Path) -> Path:
    """The card beside ``x.safetensors``, ``x.json`` or ``x``; in a folder, ``tts.json`` or ``asr.json``."""
    if path.is_dir():
        return next((path / f"{k}.json" for k in SERVABLE if (path / f"{k}.json").is_file()), path / "tts.json")
    return artifact_paths(path)[1]


def card_kind(path: Path) -> str:
    """``tts`` or ``asr``, as the model card of ``path`` says."""
    path = Path(path)
    if is_export_dir(path):
        raise ModelLoadError(f"{path} is an ONNX export directory; serve it with --backend onnx, or give the "
                             ".safetensors model it was exported from")
    card = _card_path(path)
    try:
        kind = json.loads(card.read_text(encoding="utf-8")).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ModelLoadError(f"{path}: cannot read its model card {card} ({error})") from error
    if kind not in SERVABLE:
        raise ModelLoadError(f"{card}: kind {kind!r} cannot be served; give a TTS or ASR model")
    return kind


def export_kinds(path: Path) -> tuple[str, ...]:
    """The servable models (``tts``, ``asr``) in the export directory ``path``, in that order."""
    from tokenspeech.runtime.manifest import ExportDirectory

    kinds = tuple(kind for kind in SERVABLE if kind in ExportDirectory.open(path).kinds)
    if not kinds:
        raise ModelLoadError(f"{path}: the export has no TTS or ASR model to serve; export one with "
                             f"`tokenspeech export tts asr -o {path}`")
    return kinds
