"""Per-request sessions: the concurrent-stream limit and stepping a streaming program on a model's worker.

A session is whatever state one request holds (decoder and codec state for
synthesis, encoder caches and partial labels for recognition). It lives
inside a streaming program (:mod:`tokenspeech.decoding.calls`; a plain
generator of outputs is one too) that only the model's worker thread
touches; the request's coroutine reads its outputs through
:class:`SteppedStream`, the whole program one batcher task whose model calls
are batched with other sessions', and closing the stream frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tokenspeech.decoding import calls
from tokenspeech.serving.batcher import SETTLED, Batcher, Pause
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


@dataclass(frozen=True)
class _Ended:
    error: BaseException | None


class SteppedStream(Generic[T]):
    """An async iterator over the outputs of ``program``, which runs on ``batcher`` as one task for the whole stream.

    The program runs up to ``ahead`` outputs ahead of the consumer, then
    pauses (leaves the worker, :class:`Pause`) until the consumer takes one;
    a consumer that keeps up never makes it pause. Keeping one task alive
    between outputs is what keeps concurrent streams in step: when each
    output was a new task, a stream rejoined the worker a turn or more after
    the others and fell out of phase, so the semi-AR block passes of 16
    streams held 4.3 sessions on average (6 with one task per stream, the
    rest of the gap being streams of different lengths).

    When more tasks wait than the batcher takes at once (``max_batch``), a
    stream yields its place after each output and rejoins at the back of
    the line, so streams beyond ``max_batch`` take turns instead of waiting
    for whole streams to end.

    Until its first output the stream is an *eager* task (:data:`~tokenspeech.serving.batcher.SETTLED`):
    its passes never wait for fuller batches, so the batcher's patience does
    not delay a first audio chunk (16 streams under sustained load, docs/serving.md).

    :meth:`close` stops generation: the program is closed on the worker
    thread at its next call boundary, which frees the session's state.
    """

    def __init__(self, batcher: Batcher, program: calls.Program[None], ahead: int = 2) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ahead = ahead
        self._lock = threading.Lock()  # _unread and _pause are shared with the worker thread
        self._unread = 0
        self._pause: Pause | None = None
        self._closed = False
        self._batcher = batcher
        self._future = batcher.submit_program(self._pump(program), eager=True)
        self._future.add_done_callback(self._ended)

    def _pump(self, program: calls.Program[None]) -> calls.Program[None]:
        """On the worker: the program's calls pass through; its outputs go to the queue."""
        outputs = calls.Outputs(program)
        settled = False
        try:
            while True:
                item = yield from outputs.next()
                if item is calls.END:
                    return
                if not settled:  # the first output is out: from now on its passes may wait for fuller batches
                    settled = True
                    yield SETTLED
                with self._lock:
                    self._unread += 1
                    pause = self._pause = Pause() if self._unread >= self._ahead else None
                self._deliver(item)
                if pause is None and self._batcher.crowded:  # tasks wait for a place: give ours up for a turn
                    pause = Pause()
                    pause.release()
                if pause is not None:
                    yield pause
        finally:
            outputs.close()

    def _ended(self, future: Future) -> None:
        error = None if future.cancelled() else future.exception()
        self._deliver(_Ended(None if isinstance(error, CancelledError) else error))

    def _deliver(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is reading any more
            pass

    def __aiter__(self) -> SteppedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _Ended):
            self._closed = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        with self._lock:
            self._unread -= 1
            pause = None
            if self._pause is not None and self._unread < self._ahead:
                pause, self._pause = self._pause, None
        if pause is not None:
            pause.release()
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop generating; safe to call from a cancelled request (does not await)."""
        if self._closed:
            return
        self._closed = True
        self._batcher.cancel(self._future)

    async def __aenter__(self) -> SteppedStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
