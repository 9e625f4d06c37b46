"""The server's ONNX Runtime backend: the same engines as the PyTorch one, over :mod:`tokenspeech.runtime`.

A ``--models`` path is either

- an export directory (``tokenspeech export ... -o DIR``): served as is, its
  TTS and/or ASR model (a TTS speaks through the codec exported with it); or
- a ``.safetensors`` model with its card: exported once into the cache
  directory (:class:`ExportCache`), a TTS together with the server's codec
  weights, and served from there.

The codec for Encode/Decode (``--codec``) is likewise an export directory
holding a codec, or codec weights exported into the cache (default: the
shipped tscodec). Every session is created at load time, so a broken export
fails at start-up, not in the middle of a request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tokenspeech.errors import ModelLoadError
from tokenspeech.export.manifest import FORMAT_VERSION, MANIFEST_FILE
from tokenspeech.runtime.sessions import RuntimeOptions
from tokenspeech.serving.backends import AsrEngine, CodecEngine, RecognizerEngine, TtsEngine
from tokenspeech.serving.model_files import ASR, TTS, card_kind, export_kinds, is_export_dir

logger = logging.getLogger(__name__)

CODEC = "codec"
# Source folders whose code decides what an export contains: a change there makes a new cache entry.
_EXPORT_SOURCES = ("export", "models")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tokenspeech/onnx``, else ``~/.cache/tokenspeech/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tokenspeech" / "onnx"


def artifact_files(path: Path, kind: str) -> tuple[Path, Path]:
    """``(weights, card)`` of ``x.safetensors``, ``x.json``, the stem ``x`` or a folder holding ``<kind>.*``.

    :class:`ModelLoadError` when either file is missing.
    """
    base = Path(path)
    if base.is_dir():
        base = base / (("tscodec" if kind == CODEC else kind))
    stem = base.with_suffix("") if base.suffix in (".safetensors", ".json") else base
    files = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{kind} model not found: {', '.join(missing)} missing; give a .safetensors model "
                             "with its .json card, or an export directory")
    return files


def _fingerprint(files: list[Path]) -> str:
    """SHA-256 of the files' bytes, the tokenspeech version and the exporter's source code."""
    import tokenspeech

    digest = hashlib.sha256(f"{tokenspeech.__version__}/{FORMAT_VERSION}".encode())
    package = Path(tokenspeech.__file__).parent
    sources = sorted(p for folder in _EXPORT_SOURCES for p in (package / folder).glob("*.py"))
    for path in [*files, *sources]:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class ExportCache:
    """Export directories of ``.safetensors`` models, one per content fingerprint, made on first use.

    An export is written into a temporary folder and renamed into place, so
    an interrupted export never leaves a half directory that looks finished.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def export(self, kind: str, model: Path, codec: Path | None = None) -> Path:
        """The export directory of ``model`` (a ``kind`` artifact; a TTS with the codec at ``codec``)."""
        from tokenspeech.codecs.native import default_weights_path

        weights, card = artifact_files(model, kind)
        files = [weights, card]
        codec_weights = None
        if kind == TTS:
            codec_weights, codec_card = artifact_files(codec or default_weights_path(), CODEC)
            files += [codec_weights, codec_card]
        target = self.root / f"{kind}-{weights.stem}-{_fingerprint(files)}"
        if (target / MANIFEST_FILE).is_file():
            logger.info("using the cached ONNX export %s of %s", target, weights)
            return target
        self._write(target, weights, codec_weights)
        return target

    def _write(self, target: Path, weights: Path, codec: Path | None) -> None:
        from tokenspeech.export.directory import ExportOptions, export_directory

        self.root.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s to ONNX into %s (once; later starts reuse it)", weights, target)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=self.root))
        try:
            export_directory([str(weights)], partial, ExportOptions(codec=codec))
            try:
                partial.rename(target)
            except OSError:  # another process finished the same export first
                if not (target / MANIFEST_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)


class OnnxCodecEngine:
    """:class:`CodecEngine` over an exported codec (:class:`tokenspeech.runtime.codec.OnnxCodec`).

    ``weights`` is the ``.safetensors`` file it was exported from (None when
    served from an export directory); TTS models given as weights are
    exported with it.
    """

    def __init__(self, codec: Any, weights: Path | None = None) -> None:
        self.codec = codec
        self.info = codec.info
        self.weights = weights

    def encode(self, wav: np.ndarray, codebooks: int | None) -> np.ndarray:
        codes = self.codec.encode(np.ascontiguousarray(wav, dtype=np.float32)[None, None], codebooks)
        return np.asarray(codes[0], dtype=np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.codec.decode(np.ascontiguousarray(codes, dtype=np.int64)[None])[0, 0],
                          dtype=np.float32)


class OnnxBackend:
    """:class:`tokenspeech.serving.backends.Backend` over ONNX Runtime; see the module docstring."""

    name = "onnx"

    def __init__(self, options: RuntimeOptions = RuntimeOptions(), cache: Path | None = None) -> None:
        self.options = options
        self.cache = ExportCache(cache)

    def kinds(self, path: Path) -> tuple[str, ...]:
        return export_kinds(path) if is_export_dir(path) else (card_kind(path),)

    def _directory(self, path: Path, kind: str, codec: Path | None = None) -> Path:
        return Path(path) if is_export_dir(path) else self.cache.export(kind, Path(path), codec)

    def load_codec(self, path: Path | None) -> CodecEngine:
        from tokenspeech import runtime
        from tokenspeech.codecs.native import default_weights_path

        weights = None if path is not None and is_export_dir(path) else Path(path or default_weights_path())
        directory = Path(path) if weights is None else self.cache.export(CODEC, weights)
        codec = runtime.load(directory, self.options).codec()
        codec.graphs.open_all()
        return OnnxCodecEngine(codec, weights)

    def load_tts(self, path: Path, codec: CodecEngine) -> TtsEngine:
        from tokenspeech import runtime

        weights = codec.weights if isinstance(codec, OnnxCodecEngine) else None
        synthesizer = runtime.load(self._directory(path, TTS, weights), self.options).synthesizer()
        synthesizer.backend.graphs.open_all()  # type: ignore[attr-defined]
        synthesizer.codec.graphs.open_all()  # type: ignore[attr-defined]
        return synthesizer

    def load_asr(self, path: Path) -> AsrEngine:
        from tokenspeech.runtime.asr import OnnxAsrBackend
        from tokenspeech.runtime.manifest import ExportDirectory

        backend = OnnxAsrBackend(ExportDirectory.open(self._directory(path, ASR)), self.options)
        backend.graphs.open_all()
        return RecognizerEngine(backend, backend.vocabulary, backend.mel)
