"""Shipped model artifacts: fp16 safetensors weights plus a JSON model card beside them.

One implementation for every model family (codec, ASR, TTS), so the file
layout, the atomic writes and the card checks cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, Callable

from tokenspeech.errors import ModelLoadError


def artifact_paths(path: str | Path, folder_name: str | None = None) -> tuple[Path, Path]:
    """``(weights, card)`` for ``x.safetensors``, ``x.json`` or the stem ``x``.

    With ``folder_name``, a folder ``d`` stands for ``d/<folder_name>.*``.
    """
    base = Path(path)
    if folder_name is not None and base.is_dir():
        base = base / folder_name
    stem = base.with_suffix("") if base.suffix in (".safetensors", ".json") else base
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a hidden file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.partial")
    write(tmp)
    os.replace(tmp, path)


def fp16_tensors(model: Any, exclude: Collection[str] = ()) -> dict[str, Any]:
    """The model's state dict (less ``exclude``) with floating tensors in float16, contiguous, on the CPU."""
    import torch

    return {name: (t.detach().to(torch.float16) if t.is_floating_point() else t.detach()).contiguous().cpu()
            for name, t in model.state_dict().items() if name not in exclude}


def write_artifact(weights: Path, card_path: Path, model: Any, card: dict[str, Any], format_version: int,
                   exclude: Collection[str] = ()) -> None:
    """Write fp16 weights (all of the state dict but ``exclude``) and the card, each atomically."""
    from safetensors.torch import save_file

    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = fp16_tensors(model, exclude)
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format_version": str(format_version)}))
    text = json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write(card_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_weights(weights: Path) -> dict[str, Any]:
    """The tensors of a safetensors file, floating ones as float32 (errors of ``load_file`` pass through)."""
    from safetensors.torch import load_file

    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}


def read_card(card_path: Path, kind: str | None, format_version: int, label: str) -> dict[str, Any]:
    """Read a model card; :class:`ModelLoadError` unless it is a ``kind`` card of ``format_version``.

    ``kind=None`` is for cards without a ``kind`` field (tscodec's, which name themselves).
    """
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{card_path}: unreadable model card ({error})") from error
    if not isinstance(card, dict) or card.get("kind") != kind or card.get("format_version") != format_version:
        raise ModelLoadError(f"{card_path}: not {label} model card of format version {format_version}")
    return card
