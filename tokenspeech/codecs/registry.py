"""Codecs by name: the one place that maps a codec name to its loader.

Loaders are imported inside the functions, so importing this module is cheap
and does not load torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenspeech.codecs.base import AudioTokenizer, CodecInfo
from tokenspeech.errors import ConfigError

NATIVE = "tscodec"
ENCODEC = "encodec_24khz"


def _load_native(weights: Path | None) -> AudioTokenizer[Any]:
    from tokenspeech.codecs.native import load_native_codec

    return load_native_codec(weights)


def _load_encodec(weights: Path | None) -> AudioTokenizer[Any]:
    from tokenspeech.codecs.encodec import load_encodec

    return load_encodec(weights)


def _loaders() -> dict[str, Callable[[Path | None], AudioTokenizer[Any]]]:
    return {NATIVE: _load_native, ENCODEC: _load_encodec}


def available_codecs() -> list[str]:
    """Names accepted by :func:`load_codec`, the default (our own codec) first."""
    return list(_loaders())


def _check_name(name: str) -> None:
    if name not in _loaders():
        raise ConfigError(f"unknown codec {name!r}; choose one of: {', '.join(available_codecs())}")


def load_codec(name: str, weights: Path | None = None) -> AudioTokenizer[Any]:
    """Load codec ``name`` (weights from ``weights`` or the codec's default place).

    Raises :class:`ConfigError` for an unknown name (listing the choices) and
    :class:`~tokenspeech.errors.ModelLoadError` when the weights are missing.
    """
    _check_name(name)
    return _loaders()[name](weights)


def codec_info(name: str, weights: Path | None = None) -> CodecInfo:
    """A codec's :class:`CodecInfo`; EnCodec's is known without its weights, others are loaded."""
    _check_name(name)
    if name == ENCODEC:
        from tokenspeech.codecs.encodec import ENCODEC_24KHZ_INFO

        return ENCODEC_24KHZ_INFO
    return load_codec(name, weights).info
