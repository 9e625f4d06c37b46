"""Server options: one frozen dataclass, validated in one place (``__post_init__``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenspeech.errors import ConfigError
from tokenspeech.precisions import PRECISIONS

BACKENDS = ("torch", "onnx")
DEFAULT_PORT = 50051
# Turns a smaller batchable group may wait for a larger one (Batcher). 3: with 16 clients calling back to back
# (sessions out of phase) it filled the passes and raised synthesis throughput ~13 % (docs/serving.md, session 6).
DEFAULT_BATCH_PATIENCE = 3


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: ``path`` to its weights or card, served as ``name`` (default: the file stem)."""

    path: Path
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``NAME=PATH`` or ``PATH``."""
        name, sep, path = text.partition("=")
        if not sep:
            name, path = "", text
        if not path:
            raise ConfigError(f"model spec {text!r}: give PATH or NAME=PATH")
        return cls(Path(path), name)

    @property
    def served_name(self) -> str:
        if self.name:
            return self.name
        return self.path.stem if self.path.suffix in (".safetensors", ".json") else self.path.name


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``tokenspeech serve`` takes; invalid combinations raise :class:`ConfigError` here."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 = any free port (the bound one is reported)
    models: tuple[ModelSpec, ...] = ()  # empty = the shipped models that exist
    backend: str = "torch"
    max_streams: int = 16  # concurrent synthesis/recognition requests, unary ones included
    token: str | None = None  # bearer token every call must carry (health checks excepted)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int | None = None  # Prometheus text endpoint; None = off
    max_batch: int = 16  # sessions the batcher steps together (their passes batched)
    batch_patience: int = DEFAULT_BATCH_PATIENCE  # turns a smaller group may wait to fall in with a larger one
    grace_seconds: float = 10.0  # how long shutdown lets running streams finish
    codec: Path | None = None  # codec weights (or, onnx backend, an export directory); None = the shipped tscodec
    onnx_cache: Path | None = None  # onnx backend: where .safetensors models are exported; None = user cache dir
    threads: int = 0  # onnx backend: intra-op threads of each session; 0 = onnxruntime's default
    precision: str = "fp32"  # torch backend: the models' large matrix products (tokenspeech.models.precision)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.backend != "torch" and self.precision == "bf16":
            raise ConfigError("--precision bf16 is for the torch backend; the onnx backend runs float32")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be in 0..65535, got {self.metrics_port}")
        if self.max_streams < 1 or self.max_batch < 1:
            raise ConfigError("--max-streams and the batch size must be at least 1")
        if self.batch_patience < 0:
            raise ConfigError(f"--batch-patience must be >= 0, got {self.batch_patience}")
        if self.threads < 0:
            raise ConfigError("--threads must be >= 0 (0 = onnxruntime's default)")
        if self.grace_seconds < 0:
            raise ConfigError("the shutdown grace period cannot be negative")
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token is empty; give a non-empty secret or leave the option out")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}")
        names = [spec.served_name for spec in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"two models are served as {', '.join(duplicates)}; name them with NAME=PATH")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
