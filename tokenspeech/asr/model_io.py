"""Saving and loading ASR models: ``<name>.safetensors`` (fp16 weights) + ``<name>.json`` (model card).

The card is the single source of truth for everything needed to rebuild the
model: architecture dims (:class:`AsrModelConfig`), vocabularies, the mel
front-end, the encoder frame period, plus what it was trained on and how
well it does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenspeech.artifacts import artifact_paths, read_card, read_weights, write_artifact
from tokenspeech.errors import ModelLoadError
from tokenspeech.features import MelConfig
from tokenspeech.models.asr import FRAME_SECONDS, AsrModel, AsrModelConfig
from tokenspeech.text.vocab import Vocabulary

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_NAME = "asr"


@dataclass(frozen=True)
class AsrBundle:
    """A loaded model with everything its card says about it."""

    model: AsrModel
    vocabulary: Vocabulary
    mel: MelConfig
    phonemes: Vocabulary | None = None
    card: dict[str, Any] = field(default_factory=dict)


def assets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets"


def _paths(path: str | Path | None) -> tuple[Path, Path]:
    """``(weights, card)`` for a path given with or without suffix (default: the shipped model)."""
    return artifact_paths(path if path is not None else assets_dir() / DEFAULT_NAME, DEFAULT_NAME)


def save_asr_model(model: AsrModel, path: str | Path, vocabulary: Vocabulary, mel: MelConfig,
                   phonemes: Vocabulary | None = None, training: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write fp16 weights and the card beside them (both atomically); returns the weights path."""
    weights, card_path = _paths(path)
    card = {
        "format_version": FORMAT_VERSION, "kind": "asr", "config": model.config.to_json(),
        "vocabulary": vocabulary.to_json(), "phoneme_vocabulary": phonemes.to_json() if phonemes else None,
        "mel": mel.to_json(), "frame_seconds": FRAME_SECONDS, "weights_dtype": "float16",
        "training": training or {}, "metrics": metrics or {},
    }
    write_artifact(weights, card_path, model, card, FORMAT_VERSION)
    return weights


def _read_card(card_path: Path) -> dict[str, Any]:
    return read_card(card_path, "asr", FORMAT_VERSION, "an ASR")


def read_asr_card(path: str | Path) -> dict[str, Any]:
    """The model card of the ASR model at ``path`` (with or without suffix), checked like :func:`load_asr_model`."""
    _, card_path = _paths(path)
    if not card_path.is_file():
        raise ModelLoadError(f"ASR model card not found: {card_path} missing")
    return _read_card(card_path)


def load_asr_model(path: str | Path | None = None, device: str = "cpu") -> AsrBundle:
    """Load ``<path>.safetensors`` + ``<path>.json`` (default: ``tokenspeech/assets/asr``) in eval mode.

    Raises :class:`ModelLoadError` when either file is missing or they do not match.
    """
    weights, card_path = _paths(path)
    missing = [str(p) for p in (weights, card_path) if not p.is_file()]
    if missing:
        raise ModelLoadError(f"ASR model not found: {', '.join(missing)} missing. Train one with "
                             "`tokenspeech train asr --corpus CORPUS --out DIR` and pass its path, "
                             "or copy DIR/asr.safetensors and DIR/asr.json into tokenspeech/assets/.")
    card = _read_card(card_path)
    try:
        config = AsrModelConfig.from_json(card["config"])
        model = AsrModel(config)
        model.load_state_dict(read_weights(weights), strict=True)
    except (KeyError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"{weights}: weights do not match the card {card_path.name} ({error})") from error
    phonemes = card.get("phoneme_vocabulary")
    return AsrBundle(model.to(device).eval(), Vocabulary.from_json(card["vocabulary"]),
                     MelConfig.from_json(card["mel"]), Vocabulary.from_json(phonemes) if phonemes else None, card)
