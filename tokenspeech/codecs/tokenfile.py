"""Token files: codec codes on disk, self-describing and checked.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"TSTK"
    4       2     format version (uint16, currently 1)
    6       4     header length H in bytes (uint32)
    10      H     header: UTF-8 JSON object (see below)
    10+H    P     payload: codes [K, F] row-major, dtype named in the header ("<u2" or "<u4")
    10+H+P  4     CRC-32 of header and payload bytes (uint32)

Header keys: ``codec`` (:meth:`CodecInfo.to_json`), ``codebooks`` (K),
``frames`` (F), ``shape`` ([K, F]), ``dtype``, ``num_samples`` (audio length
at the codec's sample rate, so a decoder can trim the frame padding),
``sample_rate`` (the codec's rate), ``source_sample_rate`` (rate of the file
the audio came from, or null) and ``extra`` (free JSON object).

Every problem reading a file raises :class:`TokenFileError` naming the file.
Files are written beside their target and renamed, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.errors import ConfigError, TokenFileError

MAGIC = b"TSTK"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length
_CRC = struct.Struct("<I")
_MAX_HEADER_BYTES = 1 << 20  # a header is a few hundred bytes; a larger length field means corruption
_HEADER_KEYS = ("codec", "codebooks", "frames", "shape", "dtype", "num_samples", "sample_rate",
                "source_sample_rate", "extra")


@dataclass(frozen=True)
class TokenMeta:
    """What is known about the audio behind the codes.

    ``num_samples`` is the audio length at the codec's sample rate (decoders
    return whole frames and trim to it); ``source_sample_rate`` is the rate of
    the original file before resampling (``None`` when unknown); ``extra`` is
    free, JSON-serialisable information (e.g. the source file name).
    """

    num_samples: int
    source_sample_rate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenFile:
    """A token file in memory: ``codes`` is int64 ``[K, F]``."""

    codes: np.ndarray
    info: CodecInfo
    meta: TokenMeta
    version: int = FORMAT_VERSION

    @property
    def codebooks(self) -> int:
        return int(self.codes.shape[0])

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def kbps(self) -> float:
        return self.info.bitrate_kbps(self.codebooks)


def _payload_dtype(codebook_size: int) -> np.dtype:
    return np.dtype("<u2") if codebook_size <= 1 << 16 else np.dtype("<u4")


def _check_codes(codes: np.ndarray, info: CodecInfo) -> None:
    if codes.ndim != 2:
        raise ConfigError(f"codes must have shape [K, F], got {list(codes.shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ConfigError(f"codes must be integers, got {codes.dtype}")
    if not 1 <= codes.shape[0] <= info.num_codebooks:
        raise ConfigError(f"{info.name} has 1..{info.num_codebooks} codebooks, codes have {codes.shape[0]}")
    if codes.size and (codes.min() < 0 or codes.max() >= info.codebook_size):
        raise ConfigError(f"codes must lie in [0, {info.codebook_size}), got {codes.min()}..{codes.max()}")


def write_tokens(path: str | Path, codes: np.ndarray, info: CodecInfo, meta: TokenMeta) -> None:
    """Write ``codes`` (integers ``[K, F]``) made by the codec ``info`` to ``path`` atomically.

    Raises :class:`ConfigError` when the codes do not fit the codec (shape,
    dtype, range).
    """
    path = Path(path)
    codes = np.asarray(codes)
    _check_codes(codes, info)
    dtype = _payload_dtype(info.codebook_size)
    header = {
        "codec": info.to_json(),
        "codebooks": int(codes.shape[0]),
        "frames": int(codes.shape[1]),
        "shape": [int(n) for n in codes.shape],
        "dtype": dtype.str,
        "num_samples": int(meta.num_samples),
        "sample_rate": info.sample_rate,
        "source_sample_rate": meta.source_sample_rate,
        "extra": meta.extra,
    }
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = np.ascontiguousarray(codes, dtype=dtype).tobytes()
    crc = zlib.crc32(payload, zlib.crc32(header_bytes))
    tmp = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as out:
            out.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
            out.write(header_bytes)
            out.write(payload)
            out.write(_CRC.pack(crc))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_tokens(path: str | Path) -> TokenFile:
    """Read and verify a token file.

    Raises :class:`TokenFileError` (message starts with the path) when the
    file is missing, foreign, of an unsupported version, truncated, has a
    corrupt header, a payload of the wrong size or a CRC mismatch.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TokenFileError(f"{path}: no such token file") from None
    except OSError as error:
        raise TokenFileError(f"{path}: cannot read the file ({error.strerror or error})") from error
    return _parse(data, str(path))


def _parse(data: bytes, source: str) -> TokenFile:
    head = data[: len(MAGIC)]
    if head != MAGIC[: len(head)]:
        raise TokenFileError(f"{source}: not a tokenspeech token file (starts with {data[:4]!r}, "
                             f"expected {MAGIC!r})")
    if len(data) < _PREFIX.size:
        raise TokenFileError(f"{source}: truncated token file ({len(data)} bytes, the fixed prefix alone "
                             f"is {_PREFIX.size})")
    _, version, header_len = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise TokenFileError(f"{source}: token file format version {version} is not supported (this "
                             f"tokenspeech reads version {FORMAT_VERSION}); re-encode the audio")
    if header_len > _MAX_HEADER_BYTES:
        raise TokenFileError(f"{source}: corrupt token file (header length field says {header_len} bytes)")
    header_end = _PREFIX.size + header_len
    if len(data) < header_end + _CRC.size:
        raise TokenFileError(f"{source}: truncated token file ({len(data)} bytes, header alone needs "
                             f"{header_end + _CRC.size})")
    header_bytes = data[_PREFIX.size:header_end]
    header = _parse_header(header_bytes, source)
    info, dtype, shape = _layout(header, source)
    payload_len = dtype.itemsize * shape[0] * shape[1]
    expected = header_end + payload_len + _CRC.size
    if len(data) != expected:
        problem = "truncated token file" if len(data) < expected else "token file has trailing bytes"
        raise TokenFileError(f"{source}: {problem}: header promises {shape[0]}x{shape[1]} codes "
                             f"({expected} bytes in all), the file has {len(data)} bytes")
    payload = data[header_end:header_end + payload_len]
    (stored_crc,) = _CRC.unpack_from(data, header_end + payload_len)
    if zlib.crc32(payload, zlib.crc32(header_bytes)) != stored_crc:
        raise TokenFileError(f"{source}: corrupt token file (CRC-32 mismatch: the codes or header were "
                             f"altered after writing)")
    codes = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(np.int64)
    if codes.size and codes.max() >= info.codebook_size:
        raise TokenFileError(f"{source}: corrupt token file (code {codes.max()} >= codebook size "
                             f"{info.codebook_size})")
    meta = TokenMeta(num_samples=int(header["num_samples"]), source_sample_rate=header["source_sample_rate"],
                     extra=dict(header["extra"]))
    return TokenFile(codes=codes, info=info, meta=meta, version=version)


def _parse_header(header_bytes: bytes, source: str) -> dict[str, Any]:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenFileError(f"{source}: corrupt token file (header is not UTF-8 JSON: {error})") from None
    if not isinstance(header, dict):
        raise TokenFileError(f"{source}: corrupt token file (header is not a JSON object)")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise TokenFileError(f"{source}: corrupt token file (header lacks {', '.join(missing)})")
    return header


def _layout(header: dict[str, Any], source: str) -> tuple[CodecInfo, np.dtype, tuple[int, int]]:
    """Codec, payload dtype and shape from a header, cross-checked."""
    try:
        info = CodecInfo.from_json(header["codec"])
        shape = (int(header["shape"][0]), int(header["shape"][1]))
        dtype = np.dtype(header["dtype"])
        int(header["num_samples"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise TokenFileError(f"{source}: corrupt token file (bad header field: {error!r})") from None
    if len(header["shape"]) != 2 or shape != (header["codebooks"], header["frames"]) or min(shape) < 0:
        raise TokenFileError(f"{source}: corrupt token file (shape {header['shape']} disagrees with "
                             f"codebooks={header['codebooks']}, frames={header['frames']})")
    if dtype not in (np.dtype("<u2"), np.dtype("<u4")):
        raise TokenFileError(f"{source}: corrupt token file (unsupported code dtype {header['dtype']!r})")
    if not 1 <= shape[0] <= info.num_codebooks:
        raise TokenFileError(f"{source}: corrupt token file ({shape[0]} codebooks, codec {info.name} has "
                             f"{info.num_codebooks})")
    return info, dtype, shape
