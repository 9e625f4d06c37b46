"""The log-mel definition: numpy == librosa filters == PyTorch == ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenspeech.features import MelConfig, log_mel_numpy, mel_filterbank

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_ATOL = 1e-4


def chirp_and_noise(batch: int, num_samples: int, sample_rate: int = 16000) -> np.ndarray:
    """Speech-like test audio ``[B, T]`` float32: a rising chirp plus low noise."""
    rng = np.random.default_rng(1234 + num_samples)
    t = np.arange(num_samples) / sample_rate
    rows = []
    for b in range(batch):
        phase = 2 * np.pi * (80.0 * (b + 1) * t + 1500.0 * t**2)
        rows.append(0.5 * np.sin(phase) + 0.02 * rng.standard_normal(num_samples))
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize(
    "cfg",
    [
        MelConfig(),
        MelConfig(f_min=50.0, f_max=7600.0, n_mels=40),
        MelConfig(sample_rate=24000, n_fft=1024, win_length=1024, hop_length=256, n_mels=100),
    ],
)
def test_filterbank_matches_librosa(cfg: MelConfig) -> None:
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max
    )
    ours = mel_filterbank(cfg)
    assert ours.shape == (cfg.n_mels, cfg.n_fft // 2 + 1)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


def test_numpy_matches_float64_rfft_reference() -> None:
    cfg = MelConfig()
    wav = chirp_and_noise(1, 8000)[0]
    n_frames = cfg.num_frames(wav.size)
    starts = np.arange(n_frames) * cfg.hop_length
    frames = np.stack([wav[s : s + cfg.win_length] for s in starts]).astype(np.float64)
    window = np.hanning(cfg.win_length + 1)[:-1]  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, n=cfg.n_fft, axis=-1)) ** 2
    expected = np.log(np.maximum(power @ mel_filterbank(cfg).T.astype(np.float64), cfg.log_floor)).T
    np.testing.assert_allclose(log_mel_numpy(wav, cfg), expected, rtol=0, atol=LOG_ATOL)


@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 4321, 16000])
def test_numpy_equals_torch(num_samples: int) -> None:
    torch = pytest.importorskip("torch")
    from tokenspeech.models.frontend import LogMel

    cfg = MelConfig()
    wav = chirp_and_noise(2, num_samples)
    expected = log_mel_numpy(wav, cfg)
    with torch.no_grad():
        got = LogMel(cfg)(torch.from_numpy(wav)).numpy()
    assert expected.shape == got.shape == (2, cfg.n_mels, cfg.num_frames(num_samples))
    assert expected.dtype == got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOG_ATOL)
    np.testing.assert_array_equal(log_mel_numpy(wav[1], cfg), expected[1])


@pytest.mark.parametrize("num_samples", [0, 1, 399, 400, 559, 560, 16000, 16159, 16160])
def test_num_frames_matches_output(num_samples: int) -> None:
    cfg = MelConfig()
    wav = chirp_and_noise(1, num_samples)[0]
    expected = 0 if num_samples < 400 else 1 + (num_samples - 400) // 160
    assert cfg.num_frames(num_samples) == expected
    assert log_mel_numpy(wav, cfg).shape == (cfg.n_mels, expected)


def test_torch_short_input_gives_zero_frames() -> None:
    torch = pytest.importorskip("torch")
    from tokenspeech.models.frontend import LogMel

    out = LogMel(MelConfig())(torch.zeros(3, 399))
    assert tuple(out.shape) == (3, 80, 0)


def test_silence_hits_the_floor() -> None:
    cfg = MelConfig()
    out = log_mel_numpy(np.zeros(1600, dtype=np.float32), cfg)
    np.testing.assert_allclose(out, np.log(np.float32(cfg.log_floor)), rtol=0, atol=1e-6)


def chunked(wav: np.ndarray, cfg: MelConfig, frames_per_chunk: int) -> list[np.ndarray]:
    """Chunks ``[..., T_chunk]`` starting on hop multiples, overlapping by win - hop."""
    step = frames_per_chunk * cfg.hop_length
    overlap = cfg.win_length - cfg.hop_length
    return [wav[..., start : start + step + overlap] for start in range(0, wav.shape[-1], step)]


def test_streaming_chunks_equal_offline_numpy() -> None:
    cfg = MelConfig()
    wav = chirp_and_noise(2, 16000 + 123)
    offline = log_mel_numpy(wav, cfg)
    streamed = np.concatenate([log_mel_numpy(c, cfg) for c in chunked(wav, cfg, 7)], axis=-1)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-6)


def test_streaming_chunks_equal_offline_torch() -> None:
    torch = pytest.importorskip("torch")
    from tokenspeech.models.frontend import LogMel

    cfg = MelConfig()
    model = LogMel(cfg)
    wav = torch.from_numpy(chirp_and_noise(2, 16000 + 123))
    with torch.no_grad():
        offline = model(wav)
        streamed = torch.cat([model(c) for c in chunked(wav, cfg, 7)], dim=-1)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed.numpy(), offline.numpy(), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter is deprecated
def test_onnx_export_matches_torch_for_other_lengths(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from tokenspeech.models.frontend import LogMel

    cfg = MelConfig()
    model = LogMel(cfg).eval()
    path = tmp_path / "log_mel.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(chirp_and_noise(2, 4000)),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["wav"],
        output_names=["log_mel"],
        dynamic_axes={"wav": {0: "batch", 1: "time"}, "log_mel": {0: "batch", 2: "frames"}},
    )
    op_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Conv" in op_types and "MatMul" in op_types
    assert not op_types & {"STFT", "DFT"}

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, num_samples in [(1, 1601), (3, 9999)]:
        wav = chirp_and_noise(batch, num_samples)
        (got,) = session.run(None, {"wav": wav})
        with torch.no_grad():
            expected = model(torch.from_numpy(wav)).numpy()
        assert got.shape == (batch, cfg.n_mels, cfg.num_frames(num_samples))
        np.testing.assert_allclose(got, expected, rtol=0, atol=LOG_ATOL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"win_length": 600}, "win_length"),
        ({"hop_length": 0}, "hop_length"),
        ({"hop_length": 401}, "hop_length"),
        ({"n_fft": 0}, "n_fft"),
        ({"n_mels": 0}, "n_mels"),
        ({"sample_rate": -16000}, "sample_rate"),
        ({"n_fft": 512.0}, "n_fft"),
        ({"f_max": 9000.0}, "Nyquist"),
        ({"f_min": -1.0}, "f_min"),
        ({"f_min": 4000.0, "f_max": 3000.0}, "f_min"),
        ({"f_min": 8000.0}, "f_min"),
        ({"log_floor": 0.0}, "log_floor"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MelConfig(**kwargs)


def test_config_json_round_trip() -> None:
    cfg = MelConfig(f_max=7600.0, n_mels=64)
    assert MelConfig.from_json(cfg.to_json()) == cfg
    assert MelConfig.from_json({}) == MelConfig()
    with pytest.raises(ValueError, match="unknown"):
        MelConfig.from_json({"n_mel": 64})


def test_log_mel_numpy_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        log_mel_numpy(np.zeros((1, 1, 800), dtype=np.float32), MelConfig())
    with pytest.raises(ValueError, match="floating"):
        log_mel_numpy(np.zeros(800, dtype=np.int16), MelConfig())


def test_features_module_does_not_import_torch() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    code = "import sys, tokenspeech.features; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env, timeout=60)
