"""bfloat16 matrix products (``tokenspeech.models.precision``): what is swapped, how close it stays, and the options."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import VOICES, tiny_codec, tiny_tts_bundle

from tokenspeech.codecs.native import save_native_codec
from tokenspeech.errors import ConfigError
from tokenspeech.models import precision
from tokenspeech.models.precision import (
    PRECISIONS,
    Bf16Linear,
    bf16_linears,
    bucketed_rows,
    resolve_precision,
    set_precision,
)
from tokenspeech.serving.config import ServerConfig
from tokenspeech.tts.model_io import save_tts_model
from tokenspeech.tts.pipeline import SynthesisOptions, Synthesizer

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "Hello there, this is a test."


def test_auto_follows_the_cpu_and_bad_names_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # asked for: allowed (emulated), with a warning
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp16")


def test_large_linears_become_bf16_and_stay_close_to_float32() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64),
                                torch.nn.Linear(64, 8))  # the last has 512 weights: too small to swap
    x = torch.randn(5, 7, 64)
    with torch.inference_mode():
        expected = model(x)
        assert bf16_linears(model) == 2
        got = model(x)
    assert isinstance(model[0], Bf16Linear) and isinstance(model[2], Bf16Linear)
    assert isinstance(model[3], torch.nn.Linear)
    assert model[0].weight.dtype == torch.bfloat16 and not model[0].weight.requires_grad
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert float((got - expected).norm() / expected.norm()) < 2e-2


def test_rows_are_padded_to_few_shapes_without_changing_the_real_rows() -> None:
    assert [bucketed_rows(n) for n in (1, 2, 3, 5, 17, 32, 33, 100)] == [1, 2, 4, 8, 32, 32, 64, 128]
    assert len({bucketed_rows(n) for n in range(1, 1025)}) == 6 + 31  # 1..32 by powers of two, then by 32
    torch.manual_seed(1)
    layer = Bf16Linear(torch.nn.Linear(48, 40))
    x = torch.randn(2, 37, 48)  # 74 rows -> padded to 96 inside
    with torch.inference_mode():
        whole = layer(x)
        one_by_one = torch.stack([layer(x[0]), layer(x[1])])  # 37 rows each -> 64
        alone = layer(x[0, :1])  # 1 row, not padded
    assert whole.shape == (2, 37, 40)
    # another padded shape may take another kernel: equal up to a bf16 rounding of the output
    torch.testing.assert_close(whole, one_by_one, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(whole[0, :1], alone, rtol=1e-2, atol=1e-2)


def test_a_bf16_synthesizer_speaks_like_the_float32_one(tmp_path: Path) -> None:
    codec = tiny_codec()
    codec_path = save_native_codec(codec.model, codec.config, tmp_path / "tscodec")[0]
    bundle = tiny_tts_bundle()
    model_path = save_tts_model(bundle.model, tmp_path / "tts", bundle.phonemes, VOICES, codec.info)
    options = SynthesisOptions(decoder="semiar", steps=2, seed=3)
    runs = {}
    for name in ("fp32", "bf16"):
        synth = Synthesizer.load(model_path, codec_path, precision=name)
        swapped = [m for m in (synth.bundle.model, synth.codec.model) for m in m.modules() if isinstance(m, Bf16Linear)]
        assert bool(swapped) == (name == "bf16")
        runs[name] = synth.synthesize(TEXT, options)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert bf16.audio.dtype == np.float32 and np.isfinite(bf16.audio).all()
    # durations are rounded from the predictor's output, so bf16 keeps them (here all; a CPU that sums in
    # another order might move one), and so the length of the audio
    assert bf16.audio.size > 0 and abs(bf16.audio.size - fp32.audio.size) <= 0.1 * fp32.audio.size
    with pytest.raises(ConfigError, match="precision"):
        Synthesizer.load(model_path, codec_path, precision="half")


def test_the_server_takes_a_precision_for_the_torch_backend_only(tmp_path: Path) -> None:
    from tokenspeech.serving import cli
    from tokenspeech.serving.backends import get_backend

    with pytest.raises(ConfigError, match="precision"):
        ServerConfig(precision="fp16")
    with pytest.raises(ConfigError, match="torch backend"):
        ServerConfig(backend="onnx", precision="bf16")
    assert ServerConfig(backend="onnx", precision="auto").precision == "auto"
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    assert parser.parse_args(["--precision", "bf16"]).precision == "bf16"
    assert parser.parse_args([]).precision == "fp32"
    codec = tiny_codec()
    codec_path = save_native_codec(codec.model, codec.config, tmp_path / "tscodec")[0]
    backend = get_backend(ServerConfig(precision="bf16"))
    engine = backend.load_codec(codec_path)
    assert any(isinstance(m, Bf16Linear) for m in engine.codec.model.modules())
    wav = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    assert np.isfinite(engine.decode(engine.encode(wav, None))).all()
    from tiny_models import tiny_asr_bundle

    from tokenspeech.asr.model_io import save_asr_model

    asr = tiny_asr_bundle()
    asr_engine = backend.load_asr(save_asr_model(asr.model, tmp_path / "asr", asr.vocabulary, asr.mel))
    assert any(isinstance(m, Bf16Linear) for m in asr_engine.bundle.model.modules())


def test_set_precision_fp32_leaves_the_model_alone() -> None:
    model = tiny_tts_bundle().model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert set_precision(model, "fp32") == "fp32"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_transcription_in_bf16_matches_float32_closely(tmp_path: Path) -> None:
    from tiny_models import speech_like, tiny_asr_bundle

    from tokenspeech.asr import batch
    from tokenspeech.asr.model_io import save_asr_model

    bundle = tiny_asr_bundle()
    path = save_asr_model(bundle.model, tmp_path / "asr", bundle.vocabulary, bundle.mel, bundle.phonemes)
    audio = speech_like(2.0)
    texts, encoders = {}, {}
    for name in ("fp32", "bf16"):
        recognizer = batch.make_recognizer("paraformer", path, lm="none", precision=name)
        assert any(isinstance(m, Bf16Linear) for m in recognizer.model.modules()) == (name == "bf16")
        texts[name] = recognizer.transcribe_batch([audio])[0].text
        with torch.inference_mode():
            mel = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 80, 120)).astype(np.float32))
            encoders[name] = recognizer.model.encode(mel, torch.tensor([120]))[0]
    assert float((encoders["bf16"] - encoders["fp32"]).norm() / encoders["fp32"].norm()) < 2e-2
    assert isinstance(texts["bf16"], str)
    with pytest.raises(ConfigError, match="precision"):
        batch.make_recognizer("ctc", path, lm="none", precision="int8")
