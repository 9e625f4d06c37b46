"""``tokenspeech serve --backend onnx``: the same requests give the same audio and transcripts as the torch backend.

Tiny random models are saved as artifacts; one server runs them on PyTorch,
another on ONNX Runtime (exported into a cache directory on first load), and
real gRPC clients send both the same requests.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from serving_harness import PCM16_16K, TEXT, ServerThread, pcm16
from tiny_exports import export_tiny_models
from tiny_models import VOICES, speech_like

from tokenspeech.cli import main
from tokenspeech.errors import ModelLoadError
from tokenspeech.runtime.sessions import RuntimeOptions
from tokenspeech.serving import onnx_backend
from tokenspeech.serving.backends import TorchBackend, get_backend
from tokenspeech.serving.config import ModelSpec, ServerConfig
from tokenspeech.serving.onnx_backend import OnnxBackend, OnnxCodecEngine
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc
from tokenspeech.serving.registry import load_registry

CPU_ONLY = RuntimeOptions(provider="cpu", intra_op_threads=1, inter_op_threads=1)
FLOAT32 = pb.AudioFormat(encoding=pb.FLOAT32, sample_rate_hz=16000)
AUDIO_ATOL = 1e-3  # float32 graphs vs eager; the runtime tests see <= 4e-8 on these models


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, one_thread) -> dict[str, Path]:
    """Tiny artifacts in ``models/``, their export in ``export/``, and an empty cache folder."""
    models, export = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("export")
    paths = export_tiny_models(models, export)
    return {**paths, "export": export, "cache": tmp_path_factory.mktemp("cache")}


def _config(files: dict[str, Path], backend: str = "torch") -> ServerConfig:
    return ServerConfig(models=(ModelSpec.parse(f"voice={files['tts']}"), ModelSpec.parse(str(files["asr"]))),
                        codec=files["tscodec"], backend=backend, onnx_cache=files["cache"])


@pytest.fixture(scope="module")
def servers(files: dict[str, Path]):
    """``(torch server, onnx server)`` over the same weights; the onnx one exports them into the cache."""
    config = _config(files)
    torch_server = ServerThread(config, load_registry(config, TorchBackend())).start()
    onnx_server = ServerThread(config, load_registry(config, OnnxBackend(CPU_ONLY, files["cache"]))).start()
    yield torch_server, onnx_server
    onnx_server.stop()
    torch_server.stop()


@pytest.fixture(scope="module")
def stubs(servers) -> tuple[pb_grpc.SpeechStub, pb_grpc.SpeechStub]:
    return tuple(pb_grpc.SpeechStub(server.channel()) for server in servers)


def _streamed_audio(stub: pb_grpc.SpeechStub, config: pb.SynthesisConfig, text: str) -> tuple[np.ndarray, list]:
    requests = [pb.StreamingSynthesizeRequest(config=config), pb.StreamingSynthesizeRequest(text=text)]
    chunks = list(stub.StreamingSynthesize(iter(requests)))
    return np.frombuffer(b"".join(c.audio for c in chunks), dtype="<f4"), [(c.sentence, c.final) for c in chunks]


@pytest.mark.parametrize("decoder", ["nar", "semiar", "ar"])
def test_synthesis_on_onnx_equals_torch(stubs, decoder: str) -> None:
    config = pb.SynthesisConfig(decoder=decoder, seed=7, voice="espeak-us", audio_format=FLOAT32)
    unary = [np.frombuffer(s.Synthesize(pb.SynthesizeRequest(text=TEXT, config=config)).audio, dtype="<f4")
             for s in stubs]
    assert unary[0].size > 0 and unary[0].shape == unary[1].shape
    np.testing.assert_allclose(unary[1], unary[0], atol=AUDIO_ATOL, rtol=0)
    (torch_audio, torch_chunks), (onnx_audio, onnx_chunks) = (_streamed_audio(s, config, TEXT) for s in stubs)
    assert onnx_chunks == torch_chunks
    np.testing.assert_allclose(onnx_audio, torch_audio, atol=AUDIO_ATOL, rtol=0)


def test_recognition_on_onnx_equals_torch(stubs) -> None:
    audio = pcm16(speech_like(2.0, seed=3))
    for decoder in ("ctc", "paraformer", "ar", "semiar"):
        config = pb.RecognitionConfig(model="asr", decoder=decoder, audio_format=PCM16_16K)
        results = [s.Recognize(pb.RecognizeRequest(config=config, audio=audio)).result for s in stubs]
        assert results[1] == results[0], decoder


@pytest.mark.parametrize("decoder", ["semiar", "ctc"])
def test_streaming_recognition_on_onnx_equals_torch(stubs, decoder: str) -> None:
    audio = pcm16(speech_like(2.5, seed=4))
    config = pb.RecognitionConfig(decoder=decoder, interim_results=True, audio_format=PCM16_16K)
    requests = [pb.StreamingRecognizeRequest(config=config)]
    requests += [pb.StreamingRecognizeRequest(audio=audio[i:i + 3201]) for i in range(0, len(audio), 3201)]
    torch_results, onnx_results = ([r.result for r in s.StreamingRecognize(iter(requests))] for s in stubs)
    assert onnx_results == torch_results and onnx_results[-1].is_final


def test_codec_encode_and_decode_on_onnx_equal_torch(stubs) -> None:
    audio = pcm16(speech_like(1.0))
    codes = [s.Encode(pb.EncodeRequest(audio=audio, audio_format=PCM16_16K, codebooks=3)).codes for s in stubs]
    assert codes[1] == codes[0] and codes[0].num_frames == 25
    decoded = [np.frombuffer(s.Decode(pb.DecodeRequest(codes=codes[0], audio_format=FLOAT32)).audio, dtype="<f4")
               for s in stubs]
    np.testing.assert_allclose(decoded[1], decoded[0], atol=AUDIO_ATOL, rtol=0)


def test_list_models_is_the_same_on_both_backends(stubs) -> None:
    torch_models, onnx_models = (list(s.ListModels(pb.ListModelsRequest()).models) for s in stubs)
    assert onnx_models == torch_models
    assert {m.name for m in onnx_models} == {"voice", "asr", "tscodec"}


def test_safetensors_models_are_exported_once_into_the_cache(files: dict[str, Path], servers,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    exported = sorted(p.name for p in files["cache"].iterdir())
    assert [name.split("-")[0] for name in exported] == ["asr", "codec", "tts"]
    assert not any(name.startswith(".") for name in exported)  # no half-written exports left

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the weights did not change")

    monkeypatch.setattr(onnx_backend.ExportCache, "_write", no_export)
    registry = load_registry(_config(files), OnnxBackend(CPU_ONLY, files["cache"]))
    assert list(registry.tts) == ["voice"] and list(registry.asr) == ["asr"]
    assert isinstance(registry.codec.engine, OnnxCodecEngine)


def test_an_export_directory_serves_both_of_its_models(files: dict[str, Path]) -> None:
    config = ServerConfig(models=(ModelSpec.parse(f"tiny={files['export']}"),), codec=files["export"],
                          backend="onnx")
    registry = load_registry(config, OnnxBackend(CPU_ONLY, files["cache"]))
    assert list(registry.tts) == ["tiny-tts"] and list(registry.asr) == ["tiny-asr"]
    assert registry.tts["tiny-tts"].engine.voices == VOICES
    assert registry.codec.engine.weights is None
    with pytest.raises(ModelLoadError, match="--backend onnx"):
        load_registry(ServerConfig(models=(ModelSpec(files["export"]),), codec=files["tscodec"]), TorchBackend())


def test_missing_weights_are_a_model_load_error(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "lonely.json").write_text('{"kind": "asr"}')
    backend = OnnxBackend(CPU_ONLY, files["cache"])
    assert backend.kinds(tmp_path / "lonely.safetensors") == ("asr",)
    with pytest.raises(ModelLoadError, match="lonely.safetensors missing"):
        backend.load_asr(tmp_path / "lonely.safetensors")


def test_cli_builds_the_onnx_backend_from_its_options(files: dict[str, Path]) -> None:
    backend = get_backend(ServerConfig(backend="onnx", onnx_cache=files["cache"], threads=1))
    assert isinstance(backend, OnnxBackend) and backend.cache.root == files["cache"]
    assert backend.options.intra_op_threads == 1
    assert main(["serve", "--backend", "onnx", "--threads", "-1", "--port", "0"]) == 2


def test_onnx_sessions_keep_streams_apart(stubs) -> None:
    """Two interleaved syntheses on the onnx server give what each gives alone (no shared state)."""
    _, onnx = stubs
    configs = [pb.SynthesisConfig(decoder="semiar", seed=s, audio_format=FLOAT32) for s in (1, 2)]
    alone = [_streamed_audio(onnx, c, TEXT)[0] for c in configs]
    streams = [onnx.StreamingSynthesize(iter([pb.StreamingSynthesizeRequest(config=c),
                                              pb.StreamingSynthesizeRequest(text=TEXT)])) for c in configs]
    together = [[], []]
    for pair in itertools.zip_longest(*streams):
        for index, chunk in enumerate(pair):
            if chunk is not None:
                together[index].append(chunk.audio)
    for audio, chunks in zip(alone, together):
        np.testing.assert_array_equal(np.frombuffer(b"".join(chunks), dtype="<f4"), audio)
