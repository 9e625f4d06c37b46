"""Assemble and run the grpc.aio server: both APIs, health checking, reflection, auth, metrics, TLS.

``start_server(config, registry)`` is what tests use (port 0 = a free port);
``serve(config)`` is what ``tokenspeech serve`` runs until SIGINT/SIGTERM,
then drains: health turns NOT_SERVING, new calls are refused, running
streams get ``grace_seconds`` to finish, then the model workers stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from riva.client.proto import riva_asr_pb2_grpc, riva_tts_pb2_grpc

from tokenspeech.errors import ConfigError
from tokenspeech.serving import native, riva
from tokenspeech.serving.config import ServerConfig
from tokenspeech.serving.interceptors import MetricsInterceptor, TokenAuthInterceptor
from tokenspeech.serving.metrics import Metrics
from tokenspeech.serving.proto import speech_pb2_grpc
from tokenspeech.serving.registry import ModelRegistry, load_registry
from tokenspeech.serving.service import SpeechService

logger = logging.getLogger(__name__)

SERVICES = (native.SERVICE_NAME, riva.TTS_SERVICE_NAME, riva.ASR_SERVICE_NAME)
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a few minutes of PCM16 audio in one unary call


@dataclass
class RunningServer:
    """A started server and what it owns; ``await stop()`` drains and frees everything."""

    server: grpc.aio.Server
    port: int
    service: SpeechService
    registry: ModelRegistry
    health: Any  # grpc_health aio HealthServicer
    metrics_http: Any | None = None
    grace_seconds: float = 10.0

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    async def stop(self, grace: float | None = None) -> None:
        grace = self.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await asyncio.to_thread(self.registry.stop, 5.0)
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()
        logger.info("server stopped")


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    return grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])


async def start_server(config: ServerConfig, registry: ModelRegistry) -> RunningServer:
    """Start serving ``registry`` as ``config`` says; returns once the port is bound."""
    service = SpeechService(registry, config.max_streams)
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(service.metrics, tuple(
        f"/{name}/" for name in SERVICES))]
    if config.token is not None:
        interceptors.insert(0, TokenAuthInterceptor(config.token))
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    speech_pb2_grpc.add_SpeechServicer_to_server(native.SpeechServicer(service), server)
    riva_tts_pb2_grpc.add_RivaSpeechSynthesisServicer_to_server(riva.RivaSynthesisServicer(service), server)
    riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(riva.RivaRecognitionServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = _credentials(config)
    try:
        port = (server.add_secure_port(config.address, credentials) if credentials
                else server.add_insecure_port(config.address))
    except RuntimeError as error:
        raise ConfigError(f"cannot listen on {config.address} ({error}); is the port in use?") from error
    if port == 0:
        raise ConfigError(f"cannot listen on {config.address}; is the port in use?")
    registry.start()
    await server.start()
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_http = service.metrics.serve_http(config.metrics_port, config.host) \
        if config.metrics_port is not None else None
    logger.info("serving on %s:%d (%s)", config.host, port, "TLS" if credentials else "plaintext")
    return RunningServer(server, port, service, registry, health_servicer, metrics_http, config.grace_seconds)


async def _serve_until_signal(config: ServerConfig) -> None:
    registry = await asyncio.to_thread(load_registry, config)
    running = await start_server(config, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: letting running streams finish (up to %.0f s)", config.grace_seconds)
    await running.stop()


def serve(config: ServerConfig) -> int:
    """Run the server until interrupted; returns the process exit code."""
    asyncio.run(_serve_until_signal(config))
    return 0
