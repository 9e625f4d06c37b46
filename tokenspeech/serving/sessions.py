"""Per-request sessions: the concurrent-stream limit and stepping a generator on a model's worker.

A session is whatever state one request holds (decoder and codec state for
synthesis, encoder caches and partial labels for recognition). It lives
inside a generator or object that only the model's worker thread touches;
the request's coroutine drives it one step at a time through
:class:`SteppedStream`, and closing the stream frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.status import CapacityError

T = TypeVar("T")
_DONE = object()


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
    """An async iterator over ``iterator``, each ``next`` run as one step on ``batcher``.

    One step is kept in flight ahead of the consumer, so the model works on
    the next block while the current one is sent. :meth:`aclose` drops a
    step that has not started and closes the iterator on the worker thread
    (after the step it may be running), which frees the session's state.
    """

    def __init__(self, batcher: Batcher, iterator: Iterator[T]) -> None:
        self._batcher = batcher
        self._iterator = iterator
        self._pending: Future | None = None
        self._closed = False

    def _step(self) -> object:
        try:
            return next(self._iterator)
        except StopIteration:
            return _DONE

    def __aiter__(self) -> SteppedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        future = self._pending or self._batcher.submit(self._step)
        self._pending = None
        item = await asyncio.wrap_future(future)
        if item is _DONE:
            self._closed = True
            raise StopAsyncIteration
        self._pending = self._batcher.submit(self._step)
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop generating; safe to call from a cancelled request (does not await)."""
        if self._closed and self._pending is None:
            return
        self._closed = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        try:  # on the worker: it may be running a step of this iterator right now
            self._batcher.submit(self._iterator.close)  # type: ignore[attr-defined]
        except RuntimeError:  # the worker has stopped, so nothing else touches the iterator
            self._iterator.close()  # type: ignore[attr-defined]

    async def __aenter__(self) -> SteppedStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
