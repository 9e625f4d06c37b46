"""Server interceptors: bearer-token authentication and request metrics, for every API at once."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tokenspeech.serving.metrics import Metrics

AUTH_HEADER = "authorization"
BEARER = "Bearer "
HEALTH_PREFIX = "/grpc.health.v1.Health/"  # load balancers probe without credentials

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _replace_behavior(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler of the same kind and serialisers as ``handler`` that runs ``behavior``."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checks must carry ``authorization: Bearer <token>``; else UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = (BEARER + token).encode()

    def _problem(self, metadata: tuple[tuple[str, str], ...]) -> str | None:
        values = [value for key, value in metadata or () if key == AUTH_HEADER]
        if not values:
            return (f"this server needs a token: send the metadata '{AUTH_HEADER}: {BEARER}<token>' "
                    "(the token the server was started with --token)")
        value = values[0] if isinstance(values[0], str) else values[0].decode(errors="replace")
        if not hmac.compare_digest(value.encode(), self._expected):
            return f"the '{AUTH_HEADER}' token is wrong; send '{BEARER}<token>' with the server's --token"
        return None

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        problem = self._problem(details.invocation_metadata)
        if problem is None:
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        return _replace_behavior(handler, deny)


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Observes each call's latency with its method and final status code (for methods under ``prefixes``)."""

    def __init__(self, metrics: Metrics, prefixes: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._prefixes = prefixes

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler
        method, behavior, observe = details.method, _behavior(handler), self._metrics.observe_request

        def finish(context: grpc.aio.ServicerContext, started: float, code: str | None) -> None:
            observe(method, code or _code_name(context), time.perf_counter() - started)

        if inspect.isasyncgenfunction(behavior):
            async def timed_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, code = time.perf_counter(), None
                try:
                    async for response in behavior(request, context):
                        yield response
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                finally:
                    finish(context, started, code)

            return _replace_behavior(handler, timed_stream)

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED.name
                raise
            finally:
                finish(context, started, code)

        return _replace_behavior(handler, timed)
