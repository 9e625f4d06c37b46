"""Per-request sessions: the concurrent-stream limit and stepping a streaming program on a model's worker.

A session is whatever state one request holds (decoder and codec state for
synthesis, encoder caches and partial labels for recognition). It lives
inside a streaming program (:mod:`tokenspeech.decoding.calls`; a plain
generator of outputs is one too) that only the model's worker thread
touches; the request's coroutine drives it one output at a time through
:class:`SteppedStream`, each step a batcher task whose model calls are
batched with other sessions', and closing the stream frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from tokenspeech.decoding import calls
from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.status import CapacityError

T = TypeVar("T")


class StreamGate:
    """At most ``limit`` sessions at once; one more gets :class:`CapacityError` (RESOURCE_EXHAUSTED)."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.active = 0
        self._on_change = on_change

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise CapacityError(f"the server is busy: {self.active} of {self.limit} streams are running; "
                                "retry shortly or start the server with a higher --max-streams")
        self._set(self.active + 1)
        try:
            yield
        finally:
            self._set(self.active - 1)

    def _set(self, value: int) -> None:
        self.active = value  # only touched on the event loop thread
        if self._on_change is not None:
            self._on_change(value)


class SteppedStream(Generic[T]):
    """An async iterator over the outputs of ``program``, each step (up to its next output) a task on ``batcher``.

    One step is kept in flight ahead of the consumer, so the model works on
    the next block while the current one is sent. :meth:`close` drops a
    step that has not started and closes the program on the worker thread
    (between two of its calls), which frees the session's state.
    """

    def __init__(self, batcher: Batcher, program: calls.Program[None]) -> None:
        self._batcher = batcher
        self._outputs = calls.Outputs(program)
        self._pending: Future | None = None
        self._closed = False

    def __aiter__(self) -> SteppedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        future = self._pending or self._batcher.submit_program(self._outputs.next())
        self._pending = None
        item = await asyncio.wrap_future(future)
        if item is calls.END:
            self._closed = True
            raise StopAsyncIteration
        self._pending = self._batcher.submit_program(self._outputs.next())
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop generating; safe to call from a cancelled request (does not await)."""
        if self._closed and self._pending is None:
            return
        self._closed = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        try:  # on the worker: it may be in the middle of a step of this program
            self._batcher.submit(self._outputs.close)
        except RuntimeError:  # the worker has stopped, so nothing else touches the program
            self._outputs.close()

    async def __aenter__(self) -> SteppedStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
