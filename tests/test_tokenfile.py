"""Token files: exact round trip, and one clear TokenFileError naming the file for every kind of damage."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.codecs.tokenfile import FORMAT_VERSION, MAGIC, TokenMeta, read_tokens, write_tokens
from tokenspeech.errors import ConfigError, TokenFileError

INFO = CodecInfo(name="encodec_24khz", version="24khz", sample_rate=24000, frame_rate=75.0, num_codebooks=32,
                 codebook_size=1024)
PREFIX = struct.Struct("<4sHI")


def codes(k: int = 4, frames: int = 50, size: int = 1024, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, size, (k, frames))


@pytest.fixture()
def tok_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.tok"
    write_tokens(path, codes(), INFO, TokenMeta(num_samples=15900, source_sample_rate=16000))
    return path


def split(path: Path) -> tuple[bytes, bytes, bytes, bytes]:
    """(prefix, header, payload, crc) of a file written by write_tokens."""
    data = path.read_bytes()
    _, _, header_len = PREFIX.unpack_from(data)
    end = PREFIX.size + header_len
    return data[:PREFIX.size], data[PREFIX.size:end], data[end:-4], data[-4:]


def test_round_trip(tmp_path: Path) -> None:
    original = codes(k=2, frames=123)
    path = tmp_path / "sub" / "x.tok"
    write_tokens(path, original, INFO, TokenMeta(num_samples=39300, source_sample_rate=44100,
                                                 extra={"source": "x.wav"}))
    loaded = read_tokens(path)
    assert loaded.codes.dtype == np.int64 and np.array_equal(loaded.codes, original)
    assert loaded.info == INFO and loaded.version == FORMAT_VERSION
    assert loaded.meta == TokenMeta(num_samples=39300, source_sample_rate=44100, extra={"source": "x.wav"})
    assert (loaded.codebooks, loaded.frames, loaded.kbps) == (2, 123, 1.5)
    assert path.read_bytes()[:4] == MAGIC
    assert path.stat().st_size == PREFIX.size + len(split(path)[1]) + 2 * 2 * 123 + 4  # uint16 codes
    assert [p.name for p in path.parent.iterdir()] == ["x.tok"]  # no partial file left behind


def test_empty_codes_and_large_codebooks_round_trip(tmp_path: Path) -> None:
    write_tokens(tmp_path / "e.tok", np.zeros((3, 0), dtype=np.int32), INFO, TokenMeta(num_samples=0))
    assert read_tokens(tmp_path / "e.tok").codes.shape == (3, 0)
    wide = CodecInfo("wide", "1", 16000, 50.0, 2, 1 << 17)
    big = codes(k=2, frames=9, size=1 << 17)
    write_tokens(tmp_path / "w.tok", big, wide, TokenMeta(num_samples=2880))
    assert np.array_equal(read_tokens(tmp_path / "w.tok").codes, big)


def test_overwrite_is_atomic_replacement(tok_file: Path) -> None:
    write_tokens(tok_file, codes(k=1, frames=3), INFO, TokenMeta(num_samples=960))
    assert read_tokens(tok_file).codes.shape == (1, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 4), dtype=int), "shape"),
    (np.zeros((2, 3), dtype=np.float32), "integers"),
    (np.zeros((33, 3), dtype=int), "codebooks"),
    (np.full((2, 3), 1024), r"\[0, 1024\)"),
    (np.full((2, 3), -1), r"\[0, 1024\)"),
])
def test_write_rejects_codes_that_do_not_fit(tmp_path: Path, bad: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        write_tokens(tmp_path / "b.tok", bad, INFO, TokenMeta(num_samples=1))
    assert not list(tmp_path.iterdir())


def rewrite_header(path: Path, change: dict, crc_ok: bool = True) -> None:
    """Replace header fields, keeping the file otherwise consistent (valid CRC unless crc_ok=False)."""
    import zlib

    _, header, payload, crc = split(path)
    fields = json.loads(header) | change
    new_header = json.dumps(fields).encode()
    new_crc = struct.pack("<I", zlib.crc32(payload, zlib.crc32(new_header))) if crc_ok else crc
    path.write_bytes(PREFIX.pack(MAGIC, FORMAT_VERSION, len(new_header)) + new_header + payload + new_crc)


CORRUPTIONS = {
    "missing": (lambda p: p.unlink(), "no such token file"),
    "empty": (lambda p: p.write_bytes(b""), "truncated"),
    "foreign": (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt "), "not a tokenspeech token file"),
    "short prefix": (lambda p: p.write_bytes(p.read_bytes()[:7]), "truncated"),
    "newer version": (lambda p: p.write_bytes(PREFIX.pack(MAGIC, 99, 0) + p.read_bytes()[PREFIX.size:]),
                      "version 99 is not supported"),
    "huge header length": (lambda p: p.write_bytes(PREFIX.pack(MAGIC, 1, 1 << 30) + p.read_bytes()[10:]),
                           "header length"),
    "truncated header": (lambda p: p.write_bytes(p.read_bytes()[:40]), "truncated"),
    "truncated payload": (lambda p: p.write_bytes(p.read_bytes()[:-50]), "truncated"),
    "missing crc": (lambda p: p.write_bytes(p.read_bytes()[:-4]), "truncated"),
    "trailing bytes": (lambda p: p.write_bytes(p.read_bytes() + b"\0\0"), "trailing bytes"),
    "flipped code bit": (lambda p: p.write_bytes(_flip(p.read_bytes(), -10)), "CRC-32 mismatch"),
    "flipped header bit": (lambda p: p.write_bytes(_flip(p.read_bytes(), 30, 0x20)), "CRC-32 mismatch|corrupt"),
    "header not json": (lambda p: p.write_bytes(PREFIX.pack(MAGIC, 1, 4) + b"\xff{}x" + b"\0" * 8),
                        "not UTF-8 JSON"),
    "header not object": (lambda p: rewrite_header_raw(p, b"[1, 2]"), "not a JSON object"),
    "header lacks keys": (lambda p: rewrite_header_raw(p, b"{}"), "header lacks codec"),
    "shape disagrees": (lambda p: rewrite_header(p, {"frames": 49}), "disagrees"),
    "payload size mismatch": (lambda p: rewrite_header(p, {"shape": [4, 60], "frames": 60}), "truncated"),
    "bad dtype": (lambda p: rewrite_header(p, {"dtype": "<f4"}), "dtype"),
    "bad codec": (lambda p: rewrite_header(p, {"codec": {"name": "x"}}), "bad header field"),
    "too many codebooks": (lambda p: rewrite_header(p, {"shape": [40, 5], "codebooks": 40, "frames": 5}),
                           "40 codebooks"),
    "codes beyond codebook": (lambda p: rewrite_header(p, {"codec": INFO.to_json() | {"codebook_size": 8}}),
                              ">= codebook size"),
}


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    buffer = bytearray(data)
    buffer[index] ^= mask
    return bytes(buffer)


def rewrite_header_raw(path: Path, header: bytes) -> None:
    path.write_bytes(PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"\0" * 4)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damage_raises_token_file_error_naming_the_file(tok_file: Path, case: str) -> None:
    damage, message = CORRUPTIONS[case]
    damage(tok_file)
    with pytest.raises(TokenFileError, match=message) as caught:
        read_tokens(tok_file)
    assert str(caught.value).startswith(str(tok_file))


def test_directory_is_not_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        read_tokens(tmp_path)
