"""The generated stubs, ``tokenspeech serve`` (its options, import cost, a real process) and model loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import free_port
from tiny_models import VOICES, tiny_asr_bundle, tiny_codec, tiny_tts_bundle

from tokenspeech.asr.model_io import save_asr_model
from tokenspeech.codecs.native import save_native_codec
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.serving import protogen
from tokenspeech.serving.config import ModelSpec, ServerConfig
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc
from tokenspeech.serving.model_files import card_kind
from tokenspeech.serving.registry import load_registry
from tokenspeech.tts.model_io import save_tts_model

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny TTS, ASR and codec artifacts on disk, as training would leave them."""
    folder = tmp_path_factory.mktemp("models")
    codec = tiny_codec()
    save_native_codec(codec.model, codec.model.config, folder / "codec.safetensors")
    tts = tiny_tts_bundle()
    save_tts_model(tts.model, folder / "tts", tts.phonemes, VOICES, codec.info)
    asr = tiny_asr_bundle()
    save_asr_model(asr.model, folder / "asr", asr.vocabulary, asr.mel, asr.phonemes)
    return folder


def test_committed_stubs_equal_freshly_generated_ones(tmp_path: Path) -> None:
    for fresh in protogen.generate(tmp_path):
        committed = protogen.STUB_DIR / fresh.name
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make protos`"


def test_cli_help_imports_neither_grpc_nor_torch() -> None:
    code = ("import sys\nfrom tokenspeech.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'grpc', 'prometheus_client') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "--max-streams" in result.stdout and "--tls-cert" in result.stdout


def test_server_config_is_validated_in_one_place(tmp_path: Path) -> None:
    assert ModelSpec.parse("voice=runs/tts.safetensors") == ModelSpec(Path("runs/tts.safetensors"), "voice")
    assert ModelSpec.parse("runs/asr.safetensors").served_name == "asr"
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        ServerConfig(tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ConfigError, match="NAME=PATH"):
        ServerConfig(models=(ModelSpec.parse("a/tts.safetensors"), ModelSpec.parse("b/tts.safetensors")))
    with pytest.raises(ConfigError, match="port"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match="--max-streams"):
        ServerConfig(max_streams=0)
    with pytest.raises(ConfigError, match="choose one of: torch, onnx"):
        ServerConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="--batch-patience"):
        ServerConfig(batch_patience=-1)


def test_registry_loads_models_by_their_cards(saved_models: Path, tmp_path: Path) -> None:
    assert card_kind(saved_models / "tts.safetensors") == "tts" and card_kind(saved_models / "asr") == "asr"
    with pytest.raises(ModelLoadError, match="cannot be served"):
        card_kind(saved_models / "codec.safetensors")
    config = ServerConfig(models=(ModelSpec.parse(f"voice={saved_models / 'tts.safetensors'}"),
                                  ModelSpec.parse(str(saved_models / "asr"))), codec=saved_models / "codec.safetensors")
    registry = load_registry(config)
    assert list(registry.tts) == ["voice"] and list(registry.asr) == ["asr"]
    assert registry.tts["voice"].engine.voices == VOICES


def test_serve_command_runs_until_sigterm(saved_models: Path) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenspeech", "serve", "--port", str(port), "--codec",
         str(saved_models / "codec.safetensors"), "--models", f"voice={saved_models / 'tts.safetensors'}",
         str(saved_models / "asr.safetensors"), "--grace", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.SpeechStub(channel)
        assert {m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models} == \
            {"voice", "asr", "tscodec"}
        assert stub.Synthesize(pb.SynthesizeRequest(text="Hello."), timeout=30).audio
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)
    assert "serving on 127.0.0.1" in stderr and "server stopped" in stderr


def test_demo_round_trip_script_speaks_transcribes_and_stops_the_server(saved_models: Path, tmp_path: Path) -> None:
    """`make demo`'s client: a real server process, streaming synthesis, then streaming recognition of it."""
    output = tmp_path / "roundtrip.wav"
    serve = ["--codec", str(saved_models / "codec.safetensors"), "--models",
             f"voice={saved_models / 'tts.safetensors'}", str(saved_models / "asr.safetensors")]
    result = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "clients" / "demo_roundtrip.py"), "Hello there.", "-o", str(output),
         "--timeout", "60", *[f"--serve-arg={arg}" for arg in serve]],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240,
        check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "text sent:        Hello there." in result.stdout and "text recognized:" in result.stdout
    assert "server stopped" in result.stdout and "server stopped" in result.stderr  # ours, then the server's log
    import soundfile

    audio, rate = soundfile.read(output)
    assert rate == 16000 and len(audio) > 0


def test_demo_round_trip_script_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "clients" / "demo_roundtrip.py"), "Hello.",
         "--serve-arg=--models", f"--serve-arg={tmp_path / 'missing.safetensors'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "the server exited with status" in result.stderr
