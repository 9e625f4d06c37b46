"""Errors of the serving layer and the one place that maps every error to a gRPC status code."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from tokenspeech.errors import AudioError, ConfigError, ModelLoadError, TextError, TokenFileError, TokenspeechError

logger = logging.getLogger(__name__)


class NotFoundError(TokenspeechError):
    """A request names a model or voice this server does not have (the message lists what it has)."""


class CapacityError(TokenspeechError):
    """The server is at its limit of concurrent streams."""


class AuthError(TokenspeechError):
    """The request carries no bearer token or the wrong one."""


_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (TextError, grpc.StatusCode.INVALID_ARGUMENT),
    (AudioError, grpc.StatusCode.INVALID_ARGUMENT),
    (TokenFileError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for ``error``; unexpected errors become INTERNAL."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


async def abort(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """End the RPC with the status of ``error`` (logged with its traceback when unexpected)."""
    code, message = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        logger.error("request failed", exc_info=error)
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
