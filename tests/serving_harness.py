"""An in-process server on a free port, run on its own event-loop thread, with tiny random models.

Tests talk to it with real (synchronous) gRPC clients, as a user would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
from tiny_models import tiny_asr_bundle, tiny_codec, tiny_tts_bundle

from tokenspeech.serving.backends import TorchAsrEngine, TorchCodecEngine
from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.config import ServerConfig
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.registry import ModelRegistry
from tokenspeech.serving.server import RunningServer, start_server
from tokenspeech.tts.pipeline import Synthesizer

TTS_NAME, ASR_NAME = "tiny-tts", "tiny-asr"
TEXT = "Hello there. How are you today?"
LONG_TEXT = " ".join(f"This is sentence number {n}, spoken slowly." for n in range(1, 9))
PCM16_16K = pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=16000)


def pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] as little-endian 16-bit PCM bytes (clipped)."""
    return (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_registry(max_batch: int = 16) -> ModelRegistry:
    registry = ModelRegistry(max_batch)
    codec = tiny_codec()
    registry.set_codec("tscodec", TorchCodecEngine(codec))
    registry.add_tts(TTS_NAME, Synthesizer(tiny_tts_bundle(), codec))
    registry.add_asr(ASR_NAME, TorchAsrEngine(tiny_asr_bundle()))
    return registry


class ServerThread:
    """``start()`` / ``stop()`` a server on a background loop; ``target`` is its ``host:port``."""

    def __init__(self, config: ServerConfig | None = None, registry: ModelRegistry | None = None) -> None:
        self.config = replace(config or ServerConfig(), host="127.0.0.1", port=0)
        self.registry = registry or tiny_registry(self.config.max_batch)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.running: RunningServer | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()
        self.running = self.run(start_server(self.config, self.registry))
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self, grace: float = 0.0) -> None:
        if self.running is not None:
            self.run(self.running.stop(grace))
            self.running = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)  # the loop is left open: gRPC's poller may still hold its descriptor


def hold(worker: Batcher) -> threading.Event:
    """Keep the worker busy until the returned event is set, so tasks pile up."""
    release, holding = threading.Event(), threading.Event()

    def busy() -> None:
        holding.set()
        release.wait(60)

    worker.submit(busy)
    if not holding.wait(30):  # the hold itself must not be counted as a queued task
        raise TimeoutError("the batcher never started the holding step")
    return release
