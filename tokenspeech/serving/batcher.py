"""Model compute off the event loop: one worker thread per loaded model, stepping the ready sessions together.

Everything a request asks of a model is a *task*: a program
(:mod:`tokenspeech.decoding.calls`) that yields the model calls it needs and
returns the task's result. A synthesis stream's step (its next audio block)
is one such task; so is a unary recognition (one batchable call) and a plain
function (:meth:`Batcher.submit`, no calls).

The worker keeps up to ``max_batch`` tasks in flight. At every *turn* it
takes in newly ready tasks, collects the pending call of each task in flight
and groups the calls that share a batch key (the same network and kind of
pass: semi-AR block passes, masked passes, AR steps, codec steps, unary
recognitions). A group runs as **one batched model call**, and every task
gets its own slice of the result. So concurrent sessions advance in
lockstep through shared passes, sessions joining and leaving between turns.
``max_batch = 1`` runs one task at a time: the unbatched baseline.

Calls that cannot batch (no batch key) run first in a turn, before the
grouping, and their tasks' next calls join the same turn's groups: such a
call is usually bookkeeping (a semi-AR commit that keeps its cache) that
would otherwise cost its stream a whole turn per block.

Which groups run in a turn: with ``patience = 0`` every group. With
``patience > 0`` the largest batchable group runs and a smaller batchable
group waits until one of its tasks has waited ``patience`` turns, so that
sessions at different points of their loop (one at a block pass, another
at a codec step) fall into step and share fuller passes; calls that cannot
batch always run at once. Measured (docs/serving.md): with 16 gRPC clients
calling back to back, sessions start at different times and stay out of
phase; patience 3 raised the semi-AR block passes from 10 to 11-12 tasks
each and the codec steps from 3.5 to 7-9, and synthesis throughput by about
13 % on 2 threads. With 16 streams started together it changes little.
The server's default is ``DEFAULT_BATCH_PATIENCE`` (serving/config.py).

A task may be submitted *eager* (``submit_program(..., eager=True)``): until
it yields :data:`SETTLED`, a group holding one of its calls is always due,
patience or not, runs first in its turn, and after each of its calls the
task joins a group still to run in the same turn when its next call batches
with it. A streaming session is eager until its first output, so patience,
which trades a turn or two of waiting for fuller passes, never delays the
first audio chunk that a person is waiting for, and that chunk needs fewer
turns than it has stages (conditioning, each pass, codec step): 3-4 counting
the turns that admit it and deliver it, against 5-6 (docs/serving.md,
session 20).

A task may also yield a :class:`Pause`: it leaves the worker (keeping its
place in no batch) until someone releases the pause, then rejoins at the
next turn. A streaming session is one task for its whole life and pauses
only when its consumer falls behind (:class:`tokenspeech.serving.sessions.SteppedStream`).
:meth:`Batcher.cancel` stops a task at its next call boundary, closing its
program on the worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, TypeVar

from tokenspeech.decoding import calls
from tokenspeech.decoding.calls import Call, Program

logger = logging.getLogger(__name__)

T = TypeVar("T")

ALONE_ROUNDS = 4  # calls that cannot batch which one task may chain before a turn's batched passes


class Pause:
    """What a task's program yields to leave the worker until :meth:`release` is called (from any thread).

    Releasing before the worker has parked the task is fine: it then
    rejoins at once. The program's ``yield`` of the pause returns None.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._wake: Callable[[], None] | None = None

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def _park(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on release (now, if it already happened)."""
        with self._lock:
            if not self._released:
                self._wake = wake
                return
        wake()


class _Settled:
    """The type of :data:`SETTLED`."""

    def __repr__(self) -> str:
        return "SETTLED"


SETTLED = _Settled()
"""What an eager task's program yields when it no longer needs its calls run at once (the yield returns None)."""


@dataclass(eq=False)
class _Task:
    future: Future
    program: Program[Any]
    call: Call | None = None  # the call it waits for; None before it starts, while paused and once it ended
    started: bool = False
    stop: bool = False  # set by Batcher.cancel once started: close the program at the next resume
    pause: Pause | None = None  # set while the task is parked
    waited: int = 0  # turns its pending call has waited for a larger group to run first
    eager: bool = False  # its calls' groups run at once, whatever the patience (until it yields SETTLED)
    calls_run: int = 0  # calls of its program run so far (which stage of its way to a first output it is at)


@dataclass
class CallStats:
    """Model calls of one kind run by a worker: how many, how many tasks they served, their seconds."""

    calls: int = 0
    tasks: int = 0
    seconds: float = 0.0


class _Keyed:
    """Items submitted with :meth:`Batcher.submit_batched`: same key, one ``run_batch(items)`` call."""

    def __init__(self, key: Hashable, run_batch: Callable[[list[Any]], Sequence[Any]]) -> None:
        self.key = key
        self.run_items = run_batch

    def item(self, item: Any) -> Any:
        return self.run_items([item])[0]

    def batch_key(self, call: Call) -> Hashable:
        return _Keyed, self.key

    def run_batch(self, group: Sequence[Call]) -> Sequence[Any]:
        return self.run_items([call.args[0] for call in group])


def _once(work: Callable[[], T]) -> Program[T]:
    """A task without calls: ``work()`` runs when the worker starts it."""
    return work()
    yield  # unreachable; makes this a generator function


def _one_call(call: Call) -> Program[Any]:
    return (yield call)


def _earliest_eager_stage(group: list[_Task]) -> float:
    """Order of a turn's groups: the one holding the eager task with the fewest calls run first (the
    earliest stage of a first output: conditioning before block passes before codec steps), so such a
    task can ride the later groups of the turn; groups without eager tasks after them, in order."""
    return min((task.calls_run for task in group if task.eager), default=math.inf)


class Batcher:
    """The worker thread of one model. ``start`` it before submitting and ``stop`` it at shutdown."""

    def __init__(self, name: str, max_batch: int = 16, patience: int = 0) -> None:
        """``patience``: turns a smaller batchable group may wait for the others (0: every group, every turn)."""
        if max_batch < 1 or patience < 0:
            raise ValueError(f"max_batch must be >= 1 and patience >= 0, got {max_batch} and {patience}")
        self.name = name
        self.max_batch = max_batch
        self.patience = patience
        self._ready: collections.deque[_Task] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tasks: dict[Future, _Task] = {}  # unsettled tasks, for cancel
        self._parked: set[_Task] = set()  # paused tasks (only the worker thread adds and removes)
        self._in_flight = 0  # tasks in the current turn (written by the worker)
        self.steps_run = 0  # model calls run (a batched call counts once); for tests and logs
        self.largest_batch = 0  # most tasks in flight at once
        self.largest_call = 0  # most calls merged into one batched call
        self.call_stats: dict[str, CallStats] = {}  # by call kind (the method's qualified name)

    @property
    def queued(self) -> int:
        """Tasks waiting for the worker."""
        with self._wake:
            return len(self._ready)

    @property
    def crowded(self) -> bool:
        """More tasks want the worker than it takes at once (``max_batch``): some wait for a place."""
        with self._wake:
            return len(self._ready) + self._in_flight > self.max_batch

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued or in flight, then end the thread (paused tasks fail: nobody will resume them)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            if self.call_stats:
                logger.info("worker %s ran: %s", self.name, self.describe_calls())

    def describe_calls(self) -> str:
        """The model calls run so far, by kind: count, tasks per call and seconds, busiest first."""
        kinds = sorted(self.call_stats.items(), key=lambda item: -item[1].seconds)
        return "; ".join(f"{kind} {stats.calls} calls, {stats.tasks / stats.calls:.1f} tasks each, "
                         f"{stats.seconds:.1f} s" for kind, stats in kinds)

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Queue one plain step; its result (or exception) arrives in the future."""
        return self.submit_program(_once(work))

    def submit_batched(self, key: Hashable, item: Any, run_batch: Callable[[list[Any]], Sequence[Any]]) -> Future:
        """Queue ``item``; items in flight with the same ``key`` go to one ``run_batch(items) -> results`` call."""
        keyed = _Keyed(key, run_batch)
        return self.submit_program(_one_call(Call(keyed.item, (item,))))

    def submit_program(self, program: Program[T], eager: bool = False) -> Future[T]:
        """Queue a task: ``program``'s calls run batched with other tasks'; its return value is the result.

        ``eager``: the task's calls never wait for fuller groups (``patience``) until it yields :data:`SETTLED`.
        """
        task = _Task(Future(), program, eager=eager)
        with self._wake:
            if self._stopping and self._thread is None:
                raise RuntimeError(f"the {self.name} worker has stopped")
            self._tasks[task.future] = task
            self._ready.append(task)
            self._wake.notify()
        task.future.add_done_callback(self._forget)
        return task.future

    def cancel(self, future: Future) -> None:
        """Stop the task behind ``future``: dropped if it has not started, else its program is closed on the
        worker at its next call boundary (a paused task is woken for that) and ``future`` gets CancelledError."""
        if future.cancel():
            return
        with self._wake:
            task = self._tasks.get(future)
        if task is None:  # already settled
            return
        task.stop = True
        pause = task.pause  # after writing ``stop``: see _resume
        if pause is not None:
            pause.release()

    def _forget(self, future: Future) -> None:
        with self._wake:
            self._tasks.pop(future, None)

    async def run(self, work: Callable[[], T]) -> T:
        """Await one step (cancelling the await drops the step if it has not started)."""
        return await asyncio.wrap_future(self.submit(work))

    async def run_batched(self, key: Hashable, item: Any, run_batch: Callable[[list[Any]], Sequence[Any]]) -> Any:
        return await asyncio.wrap_future(self.submit_batched(key, item, run_batch))

    async def run_program(self, program: Program[T]) -> T:
        return await asyncio.wrap_future(self.submit_program(program))

    # ------------------------------------------------------------------ the worker

    def _loop(self) -> None:
        flight: list[_Task] = []
        while True:
            with self._wake:
                while not self._ready and not flight and not self._stopping:
                    self._wake.wait()
                if not self._ready and not flight:
                    break
                admitted = []
                while self._ready and len(flight) + len(admitted) < self.max_batch:
                    task = self._ready.popleft()
                    if task.started or task.future.set_running_or_notify_cancel():
                        task.started = True
                        admitted.append(task)
            self.largest_batch = max(self.largest_batch, len(flight) + len(admitted))
            self._in_flight = len(flight) + len(admitted)
            for task in admitted:
                self._resume(task, (None, None))
            flight = [task for task in flight + admitted if task.call is not None]
            if flight:
                try:
                    self._turn(flight)
                except Exception as error:  # a bug here must fail the requests, not the worker
                    logger.exception("a turn of the %s worker failed", self.name)
                    for task in flight:
                        if task.call is not None:
                            task.call = None
                            task.program.close()
                            task.future.set_exception(error)
                flight = [task for task in flight if task.call is not None]
        for task in list(self._parked):  # stopping: nobody will release these any more
            self._end(task, RuntimeError(f"the {self.name} worker stopped while the task was paused"))

    def _turn(self, flight: list[_Task]) -> None:
        """Run the pending calls of the tasks in flight, batched (see the module notes for which wait), and
        resume each task that ran with its outcome."""
        self._run_alone_first(flight)
        flight = [task for task in flight if task.call is not None]
        groups = calls.group_calls([task.call for task in flight])
        due = self._due(flight, groups)
        to_run = [[flight[i] for i in group] for group in due]
        deferred = [[flight[i] for i in group] for group in groups if group not in due]
        while to_run:
            group = to_run.pop(min(range(len(to_run)), key=lambda i: _earliest_eager_stage(to_run[i])))
            self._run(group)
            self._join_later_groups([task for task in group if task.eager], to_run, deferred)

    def _join_later_groups(self, eager: list[_Task], to_run: list[list[_Task]], deferred: list[list[_Task]]) -> None:
        """Eager tasks whose next call batches with a group still to run this turn join that group.

        A stream waiting for its first audio chunk thus goes through as many
        stages as the turn has groups in the order it needs them (see
        :func:`_earliest_eager_stage`): conditioning, a block pass, and after
        the fine pass and the commit, the codec step; each in a pass that runs
        anyway, so the others lose only the few rows it adds. A group that
        patience held back this turn becomes due when an eager task joins it,
        as it would have been had the task been there at the turn's start.
        Calls that cannot batch (a commit) run at once, at most ``ALONE_ROUNDS``
        in a row.
        """
        for task in eager:
            self._run_alone_first([task])
            if task.call is None or not task.eager:
                continue
            key = calls.batch_key(task.call)
            if key is None:
                continue
            target = next((g for g in to_run + deferred if calls.batch_key(g[0].call) == key), None)
            if target is None:
                continue
            if not any(g is target for g in to_run):  # held back by patience: due now
                deferred.remove(target)
                for waiting in target:
                    waiting.waited = 0
                to_run.append(target)
            target.append(task)

    def _run(self, tasks: list[_Task]) -> None:
        """Run the pending calls of ``tasks`` as one group, count it, and resume each task with its outcome."""
        batch = [task.call for task in tasks]
        for task in tasks:
            task.calls_run += 1
        self.steps_run += 1
        self.largest_call = max(self.largest_call, len(batch))
        started = time.perf_counter()
        outcomes = calls.run_group(batch)
        self._count(batch[0], len(batch), time.perf_counter() - started)
        for task, outcome in zip(tasks, outcomes):
            self._resume(task, outcome)

    def _run_alone_first(self, flight: list[_Task]) -> None:
        """Run the calls that cannot batch before grouping, so the next call of each of their tasks joins
        this turn's batched passes instead of waiting for the next turn.

        Such calls are mostly bookkeeping: a semi-AR commit that keeps its
        last pass's cache runs no network, yet as a turn of its own it put
        a seventh turn before a stream's first audio chunk (condition, three
        first-codebook passes, the fine pass, commit, codec step) and a sixth
        into every later block. ``ALONE_ROUNDS`` bounds how many such calls
        one task may chain in a turn.
        """
        for _ in range(ALONE_ROUNDS):
            alone = [task for task in flight if task.call is not None and calls.batch_key(task.call) is None]
            if not alone:
                return
            for task in alone:
                self._run([task])

    def _count(self, call: Call, tasks: int, seconds: float) -> None:
        kind = getattr(call.method, "__qualname__", type(call.method).__name__)
        stats = self.call_stats.setdefault(kind, CallStats())
        stats.calls += 1
        stats.tasks += tasks
        stats.seconds += seconds

    def _due(self, flight: list[_Task], groups: list[list[int]]) -> list[list[int]]:
        """The groups to run this turn; the tasks of the others count one more turn waited."""
        if self.patience == 0:
            return groups
        keyed = [group for group in groups if calls.batch_key(flight[group[0]].call) is not None]
        if len(keyed) < 2:
            due = groups
        else:
            largest = max(keyed, key=lambda g: (len(g), max(flight[i].waited for i in g)))
            waiting = {id(g) for g in keyed if g is not largest
                       and max(flight[i].waited for i in g) < self.patience
                       and not any(flight[i].eager for i in g)}
            due = [g for g in groups if id(g) not in waiting]
        running = {i for group in due for i in group}
        for index, task in enumerate(flight):
            task.waited = 0 if index in running else task.waited + 1
        return due

    def _resume(self, task: _Task, outcome: calls.Outcome) -> None:
        """Send ``outcome`` into the task; it stops at its next call or pause, or ends and settles its future."""
        self._parked.discard(task)
        task.pause = None
        if task.stop:
            self._end(task, CancelledError())
            return
        try:
            item = calls.advance(task.program, outcome)
            while item is SETTLED:
                task.eager = False
                item = calls.advance(task.program)
        except StopIteration as stop:
            task.call = None
            task.future.set_result(stop.value)
            return
        except Exception as error:  # noqa: BLE001 -- delivered to the awaiting request
            task.call = None
            task.future.set_exception(error)
            return
        if isinstance(item, Call):
            task.call = item
        elif isinstance(item, Pause):
            task.call = None
            task.pause = item  # before reading ``stop``: cancel writes ``stop`` before reading ``pause``
            if task.stop:  # cancelled while it ran up to this pause
                self._end(task, CancelledError())
                return
            self._parked.add(task)
            item._park(lambda: self._requeue(task))
        else:
            task.call = None
            task.program.close()
            task.future.set_exception(TypeError(f"a task yielded {type(item).__name__}, not a Call"))

    def _requeue(self, task: _Task) -> None:
        """A paused task's pause was released: back in line for the next turn."""
        if task.future.done():  # ended by a cancel that raced with the release
            return
        with self._wake:
            self._ready.append(task)
            self._wake.notify()

    def _end(self, task: _Task, error: BaseException) -> None:
        """Close a task's program (its ``finally`` blocks run here, on the worker) and fail its future."""
        self._parked.discard(task)
        task.call, task.pause = None, None
        try:
            task.program.close()
        except Exception:  # noqa: BLE001 -- a program that fails to close must not take the worker down
            logger.exception("closing a task's program failed")
        if not task.future.done():
            task.future.set_exception(error)
