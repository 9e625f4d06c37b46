"""Shipped model artifacts: fp16 safetensors weights plus a JSON model card beside them.

One implementation for every model family (ASR, TTS, ...), so the file layout,
the atomic writes and the card checks cannot drift apart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from tokenspeech.errors import ModelLoadError


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a hidden file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.partial")
    write(tmp)
    os.replace(tmp, path)


def fp16_tensors(model: Any) -> dict[str, Any]:
    """The model's state dict with floating tensors in float16, contiguous, on the CPU."""
    import torch

    return {name: (t.detach().to(torch.float16) if t.is_floating_point() else t.detach()).contiguous().cpu()
            for name, t in model.state_dict().items()}


def write_artifact(weights: Path, card_path: Path, model: Any, card: dict[str, Any], format_version: int) -> None:
    """Write fp16 weights and the card, each atomically."""
    from safetensors.torch import save_file

    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = fp16_tensors(model)
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format_version": str(format_version)}))
    text = json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write(card_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_card(card_path: Path, kind: str, format_version: int, label: str) -> dict[str, Any]:
    """Read a model card; :class:`ModelLoadError` unless it is a ``kind`` card of ``format_version``."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{card_path}: unreadable model card ({error})") from error
    if card.get("kind") != kind or card.get("format_version") != format_version:
        raise ModelLoadError(f"{card_path}: not {label} model card of format version {format_version}")
    return card
