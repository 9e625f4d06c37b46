"""The models one server has loaded, by name, each with its own worker (:class:`Batcher`).

Build one with :meth:`ModelRegistry.add_tts` / ``add_asr`` / ``set_codec``
from engine objects (what tests do, with tiny random models), or with
:func:`load_registry` from a :class:`ServerConfig` (what ``tokenspeech serve``
does). The first model of a kind is the default for requests that leave
``model`` empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from tokenspeech.errors import ConfigError
from tokenspeech.serving.backends import AsrEngine, Backend, CodecEngine, TtsEngine, get_backend
from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.config import DEFAULT_BATCH_PATIENCE, ModelSpec, ServerConfig
from tokenspeech.serving.model_files import ASR, TTS
from tokenspeech.serving.status import NotFoundError

logger = logging.getLogger(__name__)

CODEC = "codec"
E = TypeVar("E")


@dataclass(frozen=True)
class Loaded(Generic[E]):
    """One served model: its name, engine and worker."""

    name: str
    kind: str
    engine: E
    batcher: Batcher


class ModelRegistry:
    def __init__(self, max_batch: int = 16, patience: int = DEFAULT_BATCH_PATIENCE) -> None:
        self.max_batch = max_batch
        self.patience = patience
        self.tts: dict[str, Loaded[TtsEngine]] = {}
        self.asr: dict[str, Loaded[AsrEngine]] = {}
        self.codec: Loaded[CodecEngine] | None = None

    def add_tts(self, name: str, engine: TtsEngine) -> None:
        self._check_new(name)
        self.tts[name] = Loaded(name, TTS, engine, Batcher(f"tts-{name}", self.max_batch, self.patience))

    def add_asr(self, name: str, engine: AsrEngine) -> None:
        self._check_new(name)
        self.asr[name] = Loaded(name, ASR, engine, Batcher(f"asr-{name}", self.max_batch, self.patience))

    def set_codec(self, name: str, engine: CodecEngine) -> None:
        self.codec = Loaded(name, CODEC, engine, Batcher(f"codec-{name}", self.max_batch, self.patience))

    def _check_new(self, name: str) -> None:
        if name in self.tts or name in self.asr:
            raise ConfigError(f"a model called {name!r} is already loaded; give each model its own name")

    def _all(self) -> list[Loaded]:
        return [*self.tts.values(), *self.asr.values(), *([self.codec] if self.codec else [])]

    def start(self) -> None:
        for entry in self._all():
            entry.batcher.start()

    def stop(self, timeout: float | None = None) -> None:
        for entry in self._all():
            entry.batcher.stop(timeout)

    def tts_model(self, name: str) -> Loaded[TtsEngine]:
        return _find(self.tts, name, "TTS", "tts")

    def asr_model(self, name: str) -> Loaded[AsrEngine]:
        return _find(self.asr, name, "ASR", "asr")

    def codec_model(self) -> Loaded[CodecEngine]:
        if self.codec is None:
            raise NotFoundError("this server has no codec loaded; start it where tokenspeech/assets/tscodec.* "
                                "exists or pass --codec PATH")
        return self.codec


def _find(models: dict[str, Loaded[E]], name: str, label: str, kind: str) -> Loaded[E]:
    if not models:
        raise NotFoundError(f"this server has no {label} model loaded; start it with --models {kind}=PATH")
    if not name:
        return next(iter(models.values()))
    if name not in models:
        raise NotFoundError(f"unknown {label} model {name!r}; this server has: {', '.join(models)}")
    return models[name]


def _default_specs() -> list[ModelSpec]:
    assets = Path(__file__).resolve().parents[1] / "assets"
    return [ModelSpec(assets / f"{kind}.safetensors", kind) for kind in (TTS, ASR)
            if (assets / f"{kind}.safetensors").is_file()]


def served_names(spec: ModelSpec, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(kind, name)`` of each model a spec serves: its name, or ``NAME-tts`` / ``NAME-asr`` when it holds both."""
    if len(kinds) == 1:
        return [(kinds[0], spec.served_name)]
    return [(kind, f"{spec.served_name}-{kind}") for kind in kinds]


def load_registry(config: ServerConfig, backend: Backend | None = None) -> ModelRegistry:
    """Load the codec and every model ``config`` names (default: the shipped ones that exist)."""
    backend = backend or get_backend(config)
    registry = ModelRegistry(config.max_batch, config.batch_patience)
    codec = backend.load_codec(config.codec)
    registry.set_codec(codec.info.name, codec)
    specs = list(config.models) or _default_specs()
    for spec in specs:
        for kind, name in served_names(spec, backend.kinds(spec.path)):
            if kind == TTS:
                registry.add_tts(name, backend.load_tts(spec.path, codec))
            else:
                registry.add_asr(name, backend.load_asr(spec.path))
            logger.info("loaded %s model %r from %s (%s backend)", kind, name, spec.path, backend.name)
    if not registry.tts and not registry.asr:
        logger.warning("no TTS or ASR model loaded (pass --models NAME=PATH); serving the codec only")
    return registry
