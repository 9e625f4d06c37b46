"""Model compute off the event loop: one worker thread per loaded model, stepping every ready session.

Sessions submit *steps* (a next audio block, an ASR chunk, a whole
utterance). The worker takes everything that is ready (up to
``max_batch``) and runs it as one round, so concurrent streams advance
together: a round gives each ready session one step, and a long request
cannot starve short ones.

The batching seam is :meth:`Batcher.submit_batched`: steps with the same
key are handed to one function as a list and run as one batched model call
(used by unary recognition: several utterances, one encoder pass). Plain
:meth:`Batcher.submit` steps (TTS blocks, streaming ASR chunks) still run one
after another inside the round; merging those into batched model steps needs
batched decoder states in ``tts``/``decoding``, and plugs in here as another
keyed step.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class _Step:
    future: Future
    work: Callable[[], Any] | None = None  # a single step
    key: Hashable | None = None  # batched steps: same key, same batch function
    item: Any = None
    run_batch: Callable[[list[Any]], Sequence[Any]] | None = None


class Batcher:
    """The worker thread of one model. ``start`` it before submitting and ``stop`` it at shutdown."""

    def __init__(self, name: str, max_batch: int = 16) -> None:
        self.name = name
        self.max_batch = max_batch
        self._ready: collections.deque[_Step] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps_run = 0  # for tests and logs
        self.largest_batch = 0

    @property
    def queued(self) -> int:
        """Steps waiting for the worker."""
        with self._wake:
            return len(self._ready)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Run what is already queued, then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Queue one step; its result (or exception) arrives in the future."""
        return self._put(_Step(Future(), work=work))

    def submit_batched(self, key: Hashable, item: Any, run_batch: Callable[[list[Any]], Sequence[Any]]) -> Future:
        """Queue ``item``; the ready items with the same ``key`` go to one ``run_batch(items) -> results`` call."""
        return self._put(_Step(Future(), key=key, item=item, run_batch=run_batch))

    async def run(self, work: Callable[[], T]) -> T:
        """Await one step (cancelling the await drops the step if it has not started)."""
        return await asyncio.wrap_future(self.submit(work))

    async def run_batched(self, key: Hashable, item: Any, run_batch: Callable[[list[Any]], Sequence[Any]]) -> Any:
        return await asyncio.wrap_future(self.submit_batched(key, item, run_batch))

    def _put(self, step: _Step) -> Future:
        with self._wake:
            if self._stopping and self._thread is None:
                raise RuntimeError(f"the {self.name} worker has stopped")
            self._ready.append(step)
            self._wake.notify()
        return step.future

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._ready and not self._stopping:
                    self._wake.wait()
                if not self._ready:
                    return
                count = min(len(self._ready), self.max_batch)
                round_ = [self._ready.popleft() for _ in range(count)]
            self._run_round([s for s in round_ if s.future.set_running_or_notify_cancel()])

    def _run_round(self, steps: list[_Step]) -> None:
        groups: dict[Hashable, list[_Step]] = {}
        for step in steps:
            if step.run_batch is None:
                self._run_one(step)
            else:
                groups.setdefault(step.key, []).append(step)
        for group in groups.values():
            self._run_group(group)
        self.largest_batch = max(self.largest_batch, len(steps))

    def _run_one(self, step: _Step) -> None:
        self.steps_run += 1
        try:
            step.future.set_result(step.work())
        except Exception as error:  # noqa: BLE001 -- delivered to the awaiting request
            step.future.set_exception(error)

    def _run_group(self, group: list[_Step]) -> None:
        self.steps_run += 1
        try:
            results = list(group[0].run_batch([s.item for s in group]))
        except Exception as error:  # noqa: BLE001 -- delivered to the awaiting requests
            if len(group) == 1:
                group[0].future.set_exception(error)
            else:  # one bad item must not fail the others: run each alone
                for step in group:
                    self._run_group([step])
            return
        for step, result in zip(group, results):
            step.future.set_result(result)
