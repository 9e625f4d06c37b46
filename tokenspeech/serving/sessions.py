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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tokenspeech.decoding import calls
from tokenspeech.serving.batcher import SETTLED, Ahead, Batcher, Pause
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


REAL_TIME_MARGIN = 0.25  # seconds a stream that gives way stays ahead of real time counted from its request


class Playback:
    """A listener playing a request's audio in real time from its first chunk: how far production is ahead of it.

    A stream that has produced more than ``lead`` seconds beyond what the
    listener has heard yields :class:`~tokenspeech.serving.batcher.Ahead`,
    so streams whose listeners still wait for their first chunk get the
    turns (the batcher runs everyone when nobody waits). It gives way only
    while it is also ``REAL_TIME_MARGIN`` ahead of real time counted from
    the request, so a slow first chunk never makes a stream as a whole
    slower than real time. One ``Playback`` spans a request's sentences, so
    a later sentence of a streamed text whose listener still has audio
    buffered does not jump the queue either. ``lead`` 0 turns this off.
    """

    def __init__(self, lead: float, seconds_of: Callable[[Any], float]) -> None:
        if lead < 0:
            raise ValueError(f"lead must be >= 0 seconds, got {lead}")
        self.lead = lead
        self._seconds_of = seconds_of
        self._requested = time.monotonic()
        self._first: float | None = None  # time.monotonic() of the first output
        self._seconds = 0.0  # audio produced so far

    def produced(self, item: Any) -> None:
        """Count an output (on the worker)."""
        if self._first is None:
            self._first = time.monotonic()
        self._seconds += self._seconds_of(item)

    def ahead_until(self) -> float | None:
        """Until when (``time.monotonic()``) the stream may give way (see above); None if not now."""
        if self.lead <= 0 or self._first is None:
            return None
        until = min(self._first + self._seconds - self.lead, self._requested + self._seconds - REAL_TIME_MARGIN)
        return until if until > time.monotonic() else None


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
    With a :class:`Playback`, a stream whose listener has enough audio
    buffered gives way to eager ones; a stream that starts with its
    listener's playback already ahead (a later sentence) is not eager.

    :meth:`close` stops generation: the program is closed on the worker
    thread at its next call boundary, which frees the session's state.
    """

    def __init__(self, batcher: Batcher, program: calls.Program[None], ahead: int = 2,
                 playback: Playback | None = None) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self._playback = playback
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ahead = ahead
        self._lock = threading.Lock()  # _unread and _pause are shared with the worker thread
        self._unread = 0
        self._pause: Pause | None = None
        self._closed = False
        self._batcher = batcher
        eager = playback is None or playback.ahead_until() is None
        self._future = batcher.submit_program(self._pump(program, eager), eager=eager)
        self._future.add_done_callback(self._ended)

    def _pump(self, program: calls.Program[None], eager: bool) -> calls.Program[None]:
        """On the worker: the program's calls pass through; its outputs go to the queue."""
        outputs = calls.Outputs(program)
        settled = not eager
        try:
            yield from self._give_way_if_ahead()
            while True:
                item = yield from outputs.next()
                if item is calls.END:
                    return
                if not settled:  # the first output is out: from now on its passes may wait for fuller batches
                    settled = True
                    yield SETTLED
                if self._playback is not None:
                    self._playback.produced(item)
                    yield from self._give_way_if_ahead()
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

    def _give_way_if_ahead(self) -> Iterator[Ahead]:
        until = None if self._playback is None else self._playback.ahead_until()
        if until is not None:
            yield Ahead(until)

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
