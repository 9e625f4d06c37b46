"""Model passes as values, so one decoding loop serves a session alone or many sessions batched.

A decoding loop written as a *program* (a generator) yields a :class:`Call`
wherever it needs the model and gets the call's result sent back::

    logits, state = yield Call(model.logits, (tokens, codebooks, state, False))

Whoever drives the program decides how calls run. :func:`run` and
:func:`outputs` run each call as it comes (one session alone: the library's
``run`` / ``iterate`` / ``stream``). A batching driver (the server's
:class:`tokenspeech.serving.batcher.Batcher`) advances many programs at once,
collects their pending calls and runs the calls with equal :func:`batch_key`
as one model pass through :func:`run_batch`, sending each program its own
result. The loops stay the single implementation either way.

A streaming program also yields *outputs* (anything that is not a
:class:`Call`: a token block, an audio chunk) and gets ``None`` back;
:class:`Outputs` reads them one at a time, :func:`calls_only` drops them.

A model adapter opts into batching by implementing :class:`BatchedModel`
(``batch_key`` + ``run_batch``); calls to anything else run alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

logger = logging.getLogger(__name__)

T = TypeVar("T")

Program = Generator[Any, Any, T]
"""Yields :class:`Call` (answered with its result) or an output (answered with ``None``); returns ``T``."""


@dataclass(frozen=True, eq=False)
class Call:
    """One model pass a program asks for: ``method(*args)``, where ``method`` is usually a bound adapter method."""

    method: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self) -> Any:
        return self.method(*self.args)

    @property
    def owner(self) -> Any:
        """The object whose method this is (None for a plain function)."""
        return getattr(self.method, "__self__", None)


@runtime_checkable
class BatchedModel(Protocol):
    """A model adapter whose calls from different sessions can run as one batched pass."""

    def batch_key(self, call: Call) -> Hashable | None:
        """Calls with equal keys may run together in one :meth:`run_batch`; None = ``call`` runs alone.

        The key names the model (two adapters of one network may share a batch) and whatever the
        calls must agree on (the method, the codebooks asked for, ...).
        """
        ...

    def run_batch(self, calls: Sequence[Call]) -> Sequence[Any]:
        """The result of every call (same key), each what ``call.run()`` gives up to float rounding."""
        ...


def batch_key(call: Call) -> Hashable | None:
    """The batch ``call`` may join, or None when it runs alone."""
    owner = call.owner
    if not isinstance(owner, BatchedModel):
        return None
    try:
        return owner.batch_key(call)
    except Exception:  # a call the owner cannot classify still runs, alone
        logger.exception("batch_key failed for a call of %s; running it alone", type(owner).__name__)
        return None


def run_batch(calls: Sequence[Call]) -> list[Any]:
    """Results of ``calls`` (all with one :func:`batch_key`) from one batched pass; one call runs as itself."""
    if len(calls) == 1:
        return [calls[0].run()]
    results = list(calls[0].owner.run_batch(calls))
    if len(results) != len(calls):
        raise RuntimeError(f"a batched pass gave {len(results)} results for {len(calls)} calls")
    return results


def row_slices(arrays: Sequence[Any]) -> list[slice]:
    """The rows each of ``arrays`` (batch-first, stacked in order) occupies in their concatenation."""
    slices, start = [], 0
    for array in arrays:
        slices.append(slice(start, start + len(array)))
        start += len(array)
    return slices


def group_calls(calls: Sequence[Call]) -> list[list[int]]:
    """Indexes of ``calls`` grouped into batches (equal :func:`batch_key`; a call without a key alone)."""
    groups: dict[Hashable, list[int]] = {}
    alone: list[list[int]] = []
    for index, call in enumerate(calls):
        key = batch_key(call)
        if key is None:
            alone.append([index])
        else:
            groups.setdefault(key, []).append(index)
    return alone + list(groups.values())


Outcome = tuple[Any, BaseException | None]
"""A call's ``(result, None)`` or ``(None, error)``."""


def run_group(calls: Sequence[Call]) -> list[Outcome]:
    """Run one group of :func:`group_calls` as one pass; if that fails, each call alone, so one bad call
    fails only itself."""
    try:
        return [(result, None) for result in run_batch(calls)]
    except Exception as error:  # noqa: BLE001 -- handed to the program that made the call
        if len(calls) == 1:
            return [(None, error)]
        logger.warning("a batched pass of %d calls failed (%s: %s); running them one by one", len(calls),
                       type(error).__name__, error)
    return [outcome for call in calls for outcome in run_group([call])]


def advance(program: Program[Any], outcome: Outcome = (None, None)) -> Any:
    """Resume ``program`` with a call's outcome (its result sent, its error thrown in); returns what it yields.

    Raises ``StopIteration`` when the program ends, or the program's own error.
    """
    value, error = outcome
    return program.throw(error) if error is not None else program.send(value)


def run_together(programs: Sequence[Program[Any]]) -> list[list[Any]]:
    """Drive ``programs`` side by side, their pending calls batched at every turn; each one's outputs.

    The outputs equal those of each program driven alone (to float rounding
    of the batched passes). For offline batches and tests; the server's
    batcher does the same with sessions coming and going.
    """
    results: list[list[Any]] = [[] for _ in programs]
    pending: dict[int, Call] = {}

    def resume(index: int, outcome: Outcome) -> None:
        while True:
            try:
                item = advance(programs[index], outcome)
            except StopIteration:
                pending.pop(index, None)
                return
            if isinstance(item, Call):
                pending[index] = item
                return
            results[index].append(item)
            outcome = (None, None)

    for index in range(len(programs)):
        resume(index, (None, None))
    while pending:
        order = list(pending)
        waiting = [pending[i] for i in order]
        for group in group_calls(waiting):
            for position, outcome in zip(group, run_group([waiting[g] for g in group])):
                resume(order[position], outcome)
    return results


def run(program: Program[T]) -> T:
    """Drive ``program`` alone (every call runs as it comes) and return its result.

    ``program`` must yield only calls; wrap a streaming one in :func:`calls_only` or read it with :func:`outputs`.
    """
    value: Any = None
    while True:
        try:
            item = program.send(value)
        except StopIteration as stop:
            return stop.value
        if not isinstance(item, Call):
            program.close()
            raise TypeError(f"run() got an output ({type(item).__name__}) from a program; use outputs()")
        value = item.run()


class _End:
    def __repr__(self) -> str:
        return "END"


END: Any = _End()
"""What :meth:`Outputs.next` returns once the program has ended."""


class Outputs:
    """Reads a streaming program's outputs one at a time, from inside another program or a driver.

    ``item = yield from outputs.next()`` passes the program's calls up to
    whoever drives the caller and returns its next output, or :data:`END`
    (then :attr:`result` holds the program's return value).
    """

    def __init__(self, program: Program[Any]) -> None:
        self.program = program
        self.result: Any = None
        self.ended = False

    def next(self) -> Program[Any]:
        if self.ended:
            return END
        outcome: Outcome = (None, None)
        while True:
            try:
                item = advance(self.program, outcome)
            except StopIteration as stop:
                self.ended, self.result = True, stop.value
                return END
            if not isinstance(item, Call):
                return item
            try:
                outcome = ((yield item), None)
            except Exception as error:  # noqa: BLE001 -- the call failed: the program that made it decides
                outcome = (None, error)

    def close(self) -> None:
        """End the program early (its ``finally`` blocks run)."""
        self.ended = True
        self.program.close()


def outputs(program: Program[Any]) -> Iterator[Any]:
    """The outputs of ``program`` driven alone, as a plain iterator."""
    cursor = Outputs(program)
    try:
        while (item := run(cursor.next())) is not END:
            yield item
    finally:
        cursor.close()


def calls_only(program: Program[T]) -> Program[T]:
    """``program`` with its outputs dropped: calls pass through, the return value is kept."""
    cursor = Outputs(program)
    while (yield from cursor.next()) is not END:
        pass
    return cursor.result


def collect(program: Program[Any]) -> Program[list[Any]]:
    """Run ``program`` inside another program and return its outputs as a list."""
    cursor = Outputs(program)
    items = []
    while (item := (yield from cursor.next())) is not END:
        items.append(item)
    return items
