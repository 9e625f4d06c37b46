"""Auth, stream limits, cancellation, deadlines, graceful shutdown, metrics, TLS and the batcher."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import riva.client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import (
    ASR_NAME,
    LONG_TEXT,
    PCM16_16K,
    TEXT,
    TTS_NAME,
    ServerThread,
    free_port,
    hold,
    pcm16,
    tiny_registry,
)
from tiny_models import speech_like

from tokenspeech.serving import metrics as m
from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.config import ServerConfig
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc
from tokenspeech.serving.registry import ModelRegistry

pytestmark = pytest.mark.usefixtures("one_thread")


class SlowEngine:
    """Wraps a TTS engine: each chunk takes ``delay`` seconds more, and closing the stream is recorded."""

    def __init__(self, engine: Any, delay: float) -> None:
        self.engine, self.delay = engine, delay
        self.voices, self.sample_rate = engine.voices, engine.sample_rate
        self.chunks_made = 0
        self.closed = threading.Event()

    def stream(self, text: str, options: Any) -> Iterator[Any]:
        try:
            for chunk in self.engine.stream(text, options):
                time.sleep(self.delay)
                self.chunks_made += 1
                yield chunk
        finally:
            self.closed.set()


def slow_server(delay: float = 0.05, **config: Any) -> tuple[ServerThread, SlowEngine]:
    base = tiny_registry()
    slow = SlowEngine(base.tts[TTS_NAME].engine, delay)
    registry = ModelRegistry()
    registry.add_tts(TTS_NAME, slow)
    return ServerThread(ServerConfig(**config), registry).start(), slow


def long_stream(stub: pb_grpc.SpeechStub, **kwargs: Any) -> Any:
    requests = [pb.StreamingSynthesizeRequest(config=pb.SynthesisConfig(decoder="semiar")),
                pb.StreamingSynthesizeRequest(text=LONG_TEXT)]
    return stub.StreamingSynthesize(iter(requests), **kwargs)


def wait_for(condition: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ----------------------------------------------------------------------------- auth


def test_token_is_required_except_for_health_checks() -> None:
    server = ServerThread(ServerConfig(token="s3cret")).start()
    try:
        stub = pb_grpc.SpeechStub(server.channel())
        request = pb.SynthesizeRequest(text=TEXT)
        for metadata, hint in ((None, "needs a token"), ((("authorization", "Bearer nope"),), "token is wrong")):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Synthesize(request, metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED and hint in raised.value.details()
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.StreamingSynthesize(iter([pb.StreamingSynthesizeRequest(config=pb.SynthesisConfig())])))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.Synthesize(request, metadata=(("authorization", "Bearer s3cret"),)).audio
        auth = riva.client.Auth(uri=server.target, metadata_args=[["authorization", "Bearer s3cret"]])
        assert riva.client.SpeechSynthesisService(auth).synthesize(TEXT, sample_rate_hz=16000).audio
        health = health_pb2_grpc.HealthStub(server.channel())
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


# ----------------------------------------------------------------------------- limits, cancellation, deadlines


def test_too_many_streams_is_resource_exhausted_until_one_ends() -> None:
    server, _ = slow_server(max_streams=1)
    try:
        stub = pb_grpc.SpeechStub(server.channel())
        first = long_stream(stub)
        next(first)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Synthesize(pb.SynthesizeRequest(text=TEXT))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in raised.value.details()
        first.cancel()
        assert wait_for(lambda: server.running.service.gate.active == 0)
        assert stub.Synthesize(pb.SynthesizeRequest(text="Hi.")).audio
    finally:
        server.stop()


def test_cancelling_a_stream_stops_generation_and_frees_its_session() -> None:
    server, slow = slow_server()
    try:
        stub = pb_grpc.SpeechStub(server.channel())
        stream = long_stream(stub)
        next(stream)
        stream.cancel()
        assert slow.closed.wait(2.0), "the synthesis generator was not closed"
        assert wait_for(lambda: server.running.service.gate.active == 0)
        made = slow.chunks_made
        time.sleep(0.3)
        assert slow.chunks_made == made <= 4  # a full run makes dozens of chunks
        assert server.running.metrics.value(m.ACTIVE_STREAMS) == 0
    finally:
        server.stop()


def test_deadline_ends_the_stream_and_frees_its_session() -> None:
    server, slow = slow_server()
    try:
        stub = pb_grpc.SpeechStub(server.channel())
        with pytest.raises(grpc.RpcError) as raised:
            list(long_stream(stub, timeout=0.4))
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert slow.closed.wait(2.0)
        assert wait_for(lambda: server.running.service.gate.active == 0)
        assert slow.chunks_made < 20
    finally:
        server.stop()


def test_graceful_shutdown_lets_running_streams_finish_and_refuses_new_ones() -> None:
    server, _ = slow_server(delay=0.02)
    stub = pb_grpc.SpeechStub(server.channel())
    stream = long_stream(stub)
    chunks = [next(stream)]
    stopping = threading.Thread(target=lambda: server.run(server.running.stop(10.0)))
    stopping.start()
    time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Synthesize(pb.SynthesizeRequest(text=TEXT), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    chunks += list(stream)
    assert chunks[-1].final and len(chunks) > 10
    stopping.join(15)
    server.running = None
    server.stop()


# ----------------------------------------------------------------------------- metrics


def test_metrics_record_latency_first_chunk_rtf_and_active_streams() -> None:
    port = free_port()
    server = ServerThread(ServerConfig(metrics_port=port)).start()
    try:
        stub = pb_grpc.SpeechStub(server.channel())
        stub.Synthesize(pb.SynthesizeRequest(text=TEXT))
        list(long_stream(stub))
        with pytest.raises(grpc.RpcError):
            stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(voice="nobody")))
        audio = (np.sin(np.arange(16000) * 0.05) * 10000).astype("<i2").tobytes()
        stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=PCM16_16K), audio=audio))
        metrics = server.running.metrics
        count = m.REQUEST_LATENCY + "_count"
        assert metrics.value(count, {m.METHOD: "/tokenspeech.v1.Speech/Synthesize", m.CODE: "OK"}) == 1
        assert metrics.value(count, {m.METHOD: "/tokenspeech.v1.Speech/Synthesize", m.CODE: "NOT_FOUND"}) == 1
        assert metrics.value(m.FIRST_CHUNK + "_count", {m.METHOD: "StreamingSynthesize"}) == 1
        assert metrics.value(m.REAL_TIME_FACTOR + "_count", {m.METHOD: "Recognize"}) == 1
        assert metrics.value(m.ACTIVE_STREAMS) == 0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for name in (m.REQUEST_LATENCY, m.FIRST_CHUNK, m.ACTIVE_STREAMS, m.REAL_TIME_FACTOR):
            assert name in text
    finally:
        server.stop()


# ----------------------------------------------------------------------------- TLS


def test_tls_server_works_with_the_riva_client(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = ServerThread(ServerConfig(tls_cert=cert, tls_key=key)).start()
    try:
        auth = riva.client.Auth(uri=f"localhost:{server.running.port}", use_ssl=True, ssl_root_cert=cert)
        assert riva.client.SpeechSynthesisService(auth).synthesize(TEXT, sample_rate_hz=16000).audio
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.SpeechStub(server.channel()).ListModels(pb.ListModelsRequest(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # plaintext is refused
    finally:
        server.stop()


# ----------------------------------------------------------------------------- batcher


@pytest.fixture
def batcher() -> Iterator[Batcher]:
    worker = Batcher("test", max_batch=8)
    worker.start()
    yield worker
    worker.stop(5)


def test_ready_items_with_one_key_run_as_one_batch_and_bad_items_fail_alone(batcher: Batcher) -> None:
    calls: list[list[Any]] = []

    def double(items: list[Any]) -> list[Any]:
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [2 * item for item in items]

    release = hold(batcher)
    futures = [batcher.submit_batched("x2", item, double) for item in (1, 2, 3)]
    release.set()
    assert [f.result(5) for f in futures] == [2, 4, 6] and calls == [[1, 2, 3]]
    release = hold(batcher)
    futures = [batcher.submit_batched("x2", item, double) for item in (4, "bad", 5)]
    release.set()
    assert futures[0].result(5) == 8 and futures[2].result(5) == 10
    with pytest.raises(ValueError):
        futures[1].result(5)


def test_a_round_steps_every_ready_session_once_and_skips_cancelled_steps(batcher: Batcher) -> None:
    order: list[str] = []
    release = hold(batcher)
    steps = [batcher.submit(lambda name=name: order.append(name)) for name in ("a", "b", "c")]
    assert steps[1].cancel()
    release.set()
    concurrent.futures.wait([steps[0], steps[2]], timeout=5)
    assert order == ["a", "c"] and batcher.largest_batch >= 2


def test_concurrent_unary_recognitions_share_one_batched_model_call() -> None:
    server = ServerThread().start()
    try:
        entry = server.registry.asr[ASR_NAME]
        batches: list[int] = []
        transcribe = entry.engine.transcribe_batch

        def recording(audios: list[np.ndarray], decoder: str) -> list[Any]:
            batches.append(len(audios))
            return transcribe(audios, decoder)

        entry.engine.transcribe_batch = recording
        stub = pb_grpc.SpeechStub(server.channel())
        requests = [pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=PCM16_16K),
                                        audio=pcm16(speech_like(1.0 + 0.25 * i, seed=i))) for i in range(3)]
        alone = [stub.Recognize(r).result for r in requests]
        release = hold(entry.batcher)
        futures = [stub.Recognize.future(r) for r in requests]
        assert wait_for(lambda: entry.batcher.queued == 3, seconds=30)
        release.set()
        together = [f.result(timeout=30).result for f in futures]
        assert batches == [1, 1, 1, 3]
        assert [r.transcript for r in together] == [r.transcript for r in alone]
        assert [r.audio_seconds for r in together] == [1.0, 1.25, 1.5]
    finally:
        server.stop()


@pytest.mark.parametrize("decoder", ["semiar", "nar"])
def test_concurrent_synthesis_streams_share_batched_passes_and_each_gets_its_alone_audio(decoder: str) -> None:
    server = ServerThread().start()
    try:
        batcher = server.registry.tts[TTS_NAME].batcher
        stub = pb_grpc.SpeechStub(server.channel())
        texts = ["Hello there. How are you today?", "Short one.", "A somewhat longer sentence, with a comma."]

        def stream(index: int) -> bytes:
            config = pb.SynthesisConfig(decoder=decoder, seed=index)
            requests = [pb.StreamingSynthesizeRequest(config=config), pb.StreamingSynthesizeRequest(text=texts[index])]
            return b"".join(chunk.audio for chunk in stub.StreamingSynthesize(iter(requests)))

        alone = [stream(i) for i in range(3)]
        assert batcher.largest_call == 1
        release = hold(batcher)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stream, i) for i in range(3)]
            assert wait_for(lambda: batcher.queued == 3, seconds=30)
            release.set()
            together = [f.result(timeout=60) for f in futures]
        assert batcher.largest_call == 3
        for mine, reference in zip(together, alone):
            a, b = np.frombuffer(mine, dtype="<i2").astype(int), np.frombuffer(reference, dtype="<i2").astype(int)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1  # float rounding of the batched passes
    finally:
        server.stop()


@pytest.mark.parametrize("decoder", ["ctc", "semiar"])
def test_concurrent_streaming_recognitions_share_batched_encoder_passes(decoder: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tokenspeech.asr.torch_backend import TorchAsrBackend

    passes: list[int] = []
    run_batch = TorchAsrBackend.run_batch

    def recording(self: TorchAsrBackend, calls: Any) -> Any:
        passes.append(len(calls))
        return run_batch(self, calls)

    monkeypatch.setattr(TorchAsrBackend, "run_batch", recording)
    server = ServerThread().start()
    try:
        entry = server.registry.asr[ASR_NAME]
        batcher = entry.batcher
        with torch.no_grad():  # the random model would say nothing: make CTC never pick blank
            entry.engine.bundle.model.ctc.bias[0] = -1e4
        stub = pb_grpc.SpeechStub(server.channel())
        audios = [pcm16(speech_like(1.2 + 0.2 * i, seed=i)) for i in range(3)]
        go = threading.Event()

        def stream(index: int, wait: bool) -> str:
            def requests() -> Iterator[pb.StreamingRecognizeRequest]:
                yield pb.StreamingRecognizeRequest(config=pb.RecognitionConfig(audio_format=PCM16_16K,
                                                                               decoder=decoder))
                if wait:
                    go.wait(30)
                audio = audios[index]
                for start in range(0, len(audio), 6400):  # 200 ms pieces, all sent at once
                    yield pb.StreamingRecognizeRequest(audio=audio[start:start + 6400])

            results = list(stub.StreamingRecognize(requests()))
            assert results[-1].result.is_final
            return results[-1].result.transcript

        alone = [stream(i, wait=False) for i in range(3)]
        assert passes == []  # one stream at a time: every encoder pass ran alone
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stream, i, True) for i in range(3)]
            time.sleep(0.5)  # the three sessions are open and wait to send audio
            release = hold(batcher)
            go.set()
            assert wait_for(lambda: batcher.queued == 3, seconds=30)
            release.set()
            together = [f.result(timeout=60) for f in futures]
        assert passes and max(passes) == 3
        assert together == alone
        assert decoder != "ctc" or all(alone)  # text that depends on every encoder frame
    finally:
        server.stop()


def test_sample_clients_work_against_the_server(tmp_path: Path) -> None:
    server = ServerThread().start()
    try:
        root = Path(__file__).parents[1]
        client = [sys.executable, str(root / "samples" / "clients" / "python_client.py"), "--server", server.target]
        listed = subprocess.run([*client, "models"], capture_output=True, text=True, check=True, timeout=60)
        assert TTS_NAME in listed.stdout and ASR_NAME in listed.stdout
        wav = tmp_path / "hello.wav"
        subprocess.run([*client, "say", "Hello there. Bye now.", "-o", str(wav)], capture_output=True, check=True,
                       timeout=60)
        heard = subprocess.run([*client, "transcribe", str(wav), "--interim"], capture_output=True, text=True,
                               check=True, timeout=60)
        assert "final @" in heard.stdout
        riva_wav = tmp_path / "riva.wav"
        subprocess.run([sys.executable, str(root / "samples" / "clients" / "riva_client.py"), "--server",
                        server.target, "tts", "Hello from Riva.", "-o", str(riva_wav)], capture_output=True,
                       check=True, timeout=60)
        with wave.open(str(riva_wav)) as handle:
            assert handle.getnframes() > 0
    finally:
        server.stop()
