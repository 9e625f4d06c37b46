"""`tokenspeech codec`: encode a real WAV file to a .tok file and back, and clear errors for bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenspeech.audio import save_audio
from tokenspeech.cli import main
from tokenspeech.codecs.encodec import WEIGHTS_ENV, EncodecTokenizer
from tokenspeech.codecs.tokenfile import read_tokens

SOURCE_RATE = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def wav_file(tmp_path: Path) -> Path:
    """1.3 s of 16 kHz vowel-like audio, so encoding also resamples."""
    t = np.arange(int(1.3 * SOURCE_RATE)) / SOURCE_RATE
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SOURCE_RATE
    wave = sum(np.sin(h * phase) / h for h in range(1, 15)) * np.sin(np.pi * t / 1.3) * 0.2
    path = tmp_path / "speech.wav"
    save_audio(path, wave.astype(np.float32), SOURCE_RATE)
    return path


def encode(wav_file: Path, out: Path, weights: Path, *extra: str) -> int:
    return main(["codec", "encode", str(wav_file), "-o", str(out), "--codec", "encodec_24khz",
                 "--weights", str(weights), *extra])


def decode(tokens: Path, out: Path, weights: Path) -> int:
    return main(["codec", "decode", str(tokens), "-o", str(out), "--weights", str(weights)])


def test_encode_decode_round_trip(wav_file: Path, tok_weights: Path, tok: EncodecTokenizer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    tokens_path = tmp_path / "speech.tok"
    assert encode(wav_file, tokens_path, tok_weights) == 0
    assert "2 codebooks" in capsys.readouterr().out
    tokens = read_tokens(tokens_path)
    samples = round(1.3 * 24000)
    assert tokens.info == tok.info and tokens.codebooks == 2 and tokens.kbps == 1.5
    assert tokens.frames == math.ceil(samples / 320)
    assert (tokens.meta.num_samples, tokens.meta.source_sample_rate) == (samples, SOURCE_RATE)

    out = tmp_path / "decoded.wav"
    assert decode(tokens_path, out, tok_weights) == 0
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and len(audio) == samples
    expected = tok.decode(torch.from_numpy(tokens.codes)[None])[0, 0, :samples].numpy()
    assert np.abs(audio - np.clip(expected, -1, 1)).max() < 2 / 32768  # 16-bit WAV rounding


def test_kbps_picks_the_codebook_count(wav_file: Path, tok_weights: Path, tmp_path: Path) -> None:
    assert encode(wav_file, tmp_path / "a.tok", tok_weights, "--kbps", "6") == 0
    assert read_tokens(tmp_path / "a.tok").codebooks == 8


def test_decode_of_a_corrupt_file_fails_with_the_reason(wav_file: Path, tok_weights: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    tokens_path = tmp_path / "speech.tok"
    assert encode(wav_file, tokens_path, tok_weights) == 0
    data = bytearray(tokens_path.read_bytes())
    data[-20] ^= 0xFF
    tokens_path.write_bytes(bytes(data))
    capsys.readouterr()
    code = decode(tokens_path, tmp_path / "x.wav", tok_weights)
    error = capsys.readouterr().err
    assert code != 0 and str(tokens_path) in error and "CRC-32 mismatch" in error
    assert not (tmp_path / "x.wav").exists()


def test_unknown_codec_lists_the_choices(wav_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["codec", "encode", str(wav_file), "-o", str(tmp_path / "a.tok"), "--codec", "opus"])
    error = capsys.readouterr().err
    assert code != 0 and "unknown codec 'opus'" in error and "tscodec" in error and "encodec_24khz" in error


def test_missing_encodec_weights_say_how_to_get_them(wav_file: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    code = main(["codec", "encode", str(wav_file), "-o", str(tmp_path / "a.tok"), "--codec", "encodec_24khz"])
    error = capsys.readouterr().err
    assert code != 0 and WEIGHTS_ENV in error and "encodec_24khz-d7cc33bc.th" in error


def test_info_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codec", "info", "encodec_24khz"]) == 0
    out = capsys.readouterr().out
    assert "24000 Hz" in out and "75 frames/s" in out and "         32  24" in out
    with pytest.raises(SystemExit) as exit_:
        main(["codec", "--help"])
    assert exit_.value.code == 0 and "tokenspeech codec decode speech.tok" in capsys.readouterr().out


def test_long_files_are_processed_in_chunks_with_the_same_result(wav_file: Path, tok_weights: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenspeech.codecs.cli as codec_cli

    assert encode(wav_file, tmp_path / "whole.tok", tok_weights) == 0
    decode(tmp_path / "whole.tok", tmp_path / "whole.wav", tok_weights)
    monkeypatch.setattr(codec_cli, "CHUNK_FRAMES", 20)  # 98 frames -> 5 streaming steps
    assert encode(wav_file, tmp_path / "chunked.tok", tok_weights) == 0
    whole, chunked = read_tokens(tmp_path / "whole.tok").codes, read_tokens(tmp_path / "chunked.tok").codes
    assert (whole == chunked).all(axis=0).mean() >= 0.95  # the rest are float-rounding ties
    decode(tmp_path / "whole.tok", tmp_path / "chunked.wav", tok_weights)
    a, b = sf.read(tmp_path / "whole.wav")[0], sf.read(tmp_path / "chunked.wav")[0]
    assert np.abs(a - b).max() <= 1 / 32768


def test_info_without_a_name_lists_every_codec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codec", "info"]) == 0
    out = capsys.readouterr().out
    assert "tscodec" in out and "encodec_24khz" in out
