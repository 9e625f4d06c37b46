"""Saving and loading TTS models: ``<name>.safetensors`` (fp16 weights) + ``<name>.json`` (model card).

The card rebuilds the model without outside knowledge: :class:`TtsConfig`,
the phoneme vocabulary, the voice names (in embedding order), the codec the
tokens belong to and how many of its codebooks are used, the g2p voice,
plus what it was trained on and how well it does. The default location is
``tokenspeech/assets/tts.safetensors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenspeech import artifacts
from tokenspeech.artifacts import read_card, read_weights, write_artifact
from tokenspeech.codecs.base import CodecInfo
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.models.tts import TtsConfig, TtsModel, count_parameters
from tokenspeech.text.vocab import Vocabulary

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_NAME = "tts"
G2P_LANGUAGE = "en-us"
TRAIN_HINT = ("train one with `tokenspeech train tts --corpus CORPUS --codec CODEC --out DIR` and pass "
              "--model DIR/tts.safetensors, or copy DIR/tts.safetensors and DIR/tts.json into tokenspeech/assets/")


@dataclass(frozen=True)
class TtsBundle:
    """A loaded TTS model and everything its card says about it."""

    model: TtsModel
    phonemes: Vocabulary
    voices: tuple[str, ...]
    codec: CodecInfo  # the codec the tokens belong to (num_codebooks = its full count)
    g2p_language: str = G2P_LANGUAGE
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def codebooks(self) -> int:
        """Codebooks the model generates (the first ``K`` of the codec's)."""
        return self.model.config.num_codebooks


def default_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / f"{DEFAULT_NAME}.safetensors"


def artifact_paths(path: str | Path | None) -> tuple[Path, Path]:
    """``(weights, card)`` for ``x.safetensors``, ``x.json``, the stem ``x`` or a folder holding ``tts.*``."""
    return artifacts.artifact_paths(path if path is not None else default_path(), DEFAULT_NAME)


def save_tts_model(model: TtsModel, path: str | Path, phonemes: Vocabulary, voices: tuple[str, ...],
                   codec: CodecInfo, training: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write fp16 weights and the card beside them (each atomically); returns the weights path."""

    if len(voices) != model.config.num_voices:
        raise ConfigError(f"{len(voices)} voice names for a model with {model.config.num_voices} voices")
    if len(phonemes) != model.config.num_phonemes:
        raise ConfigError(f"a vocabulary of {len(phonemes)} symbols for a model with {model.config.num_phonemes}")
    weights, card_path = artifact_paths(path)
    card = {
        "format_version": FORMAT_VERSION, "kind": "tts", "config": model.config.to_json(),
        "phoneme_vocabulary": phonemes.to_json(), "voices": list(voices),
        "codec": {**codec.to_json(), "codebooks_used": model.config.num_codebooks},
        "g2p": {"engine": "espeak-ng", "language": G2P_LANGUAGE},
        "parameters": count_parameters(model), "weights_dtype": "float16",
        "training": training or {}, "metrics": metrics or {},
    }
    write_artifact(weights, card_path, model, card, FORMAT_VERSION)
    return weights


def read_tts_card(path: str | Path | None = None) -> dict[str, Any]:
    """The model card of the TTS model at ``path`` (as :func:`load_tts_model` takes it), weights not read."""
    card_path = artifact_paths(path)[1]
    if not card_path.is_file():
        raise ModelLoadError(f"TTS model card not found: {card_path} missing; {TRAIN_HINT}")
    return read_card(card_path, "tts", FORMAT_VERSION, "a TTS")


def load_tts_model(path: str | Path | None = None) -> TtsBundle:
    """Load weights + card (default: ``tokenspeech/assets/tts``) in eval mode, float32.

    Raises :class:`ModelLoadError` when a file is missing or they do not match.
    """
    from safetensors import SafetensorError

    weights, card_path = artifact_paths(path)
    missing = [str(p) for p in (weights, card_path) if not p.is_file()]
    if missing:
        raise ModelLoadError(f"TTS model not found: {', '.join(missing)} missing; {TRAIN_HINT}")
    card = read_tts_card(path)
    try:
        config = TtsConfig.from_json(card["config"])
        codec = CodecInfo.from_json(card["codec"])
        model = TtsModel(config)
        model.load_state_dict(read_weights(weights), strict=True)
        bundle = TtsBundle(model.eval(), Vocabulary.from_json(card["phoneme_vocabulary"]), tuple(card["voices"]),
                           codec, card.get("g2p", {}).get("language", G2P_LANGUAGE), card)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError, OSError) as error:
        raise ModelLoadError(f"{weights}: weights do not match the card {card_path.name} ({error})") from error
    if len(bundle.voices) != config.num_voices or len(bundle.phonemes) != config.num_phonemes:
        raise ModelLoadError(f"{card_path}: voices/vocabulary sizes do not match the architecture")
    logger.debug("loaded TTS model from %s", weights)
    return bundle
