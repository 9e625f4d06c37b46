"""Prometheus metrics of one server, in a registry of their own (no process-wide globals).

Metric and label names are defined here only; tests and dashboards import them.
"""

from __future__ import annotations

from typing import Any

REQUEST_LATENCY = "tokenspeech_request_latency_seconds"
FIRST_CHUNK = "tokenspeech_time_to_first_chunk_seconds"
ACTIVE_STREAMS = "tokenspeech_active_streams"
REAL_TIME_FACTOR = "tokenspeech_real_time_factor"
METHOD = "method"
CODE = "code"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Request latency by method and status, time to first audio chunk, active streams and real-time factor."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(REQUEST_LATENCY, "Time from request start to its end, by method and status code",
                                 (METHOD, CODE), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.first_chunk = Histogram(FIRST_CHUNK, "Time from request start to the first audio chunk sent",
                                     (METHOD,), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.active = Gauge(ACTIVE_STREAMS, "Synthesis and recognition requests running now",
                            registry=self.registry)
        self.rtf = Histogram(REAL_TIME_FACTOR, "Processing time divided by audio duration", (METHOD,),
                             buckets=_RTF_BUCKETS, registry=self.registry)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self.latency.labels(method, code).observe(seconds)

    def observe_first_chunk(self, method: str, seconds: float) -> None:
        self.first_chunk.labels(method).observe(seconds)

    def observe_rtf(self, method: str, seconds: float, audio_seconds: float) -> None:
        if audio_seconds > 0:
            self.rtf.labels(method).observe(seconds / audio_seconds)

    def set_active(self, count: int) -> None:
        self.active.set(count)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (e.g. ``REQUEST_LATENCY + "_count"``), or None when it was never observed."""
        return self.registry.get_sample_value(name, labels or {})

    def serve_http(self, port: int, host: str = "127.0.0.1") -> Any:
        """Start the text endpoint on a thread; returns the HTTP server (``shutdown()`` it to stop)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
