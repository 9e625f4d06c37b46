"""Streaming sessions on the batcher: lockstep batching, pausing behind a slow reader, turns, cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from serving_harness import hold

from tokenspeech.decoding.calls import Call, Program
from tokenspeech.serving.batcher import SETTLED, Batcher, Pause
from tokenspeech.serving.sessions import SteppedStream


class Doubler:
    """A batchable fake model: ``double(x) = 2 x``; records the size of every batched pass."""

    def __init__(self) -> None:
        self.passes: list[int] = []

    def double(self, x: int) -> int:
        self.passes.append(1)
        return 2 * x

    def batch_key(self, call: Call) -> Hashable | None:
        return self

    def run_batch(self, calls: Sequence[Call]) -> list[int]:
        self.passes.append(len(calls))
        return [2 * call.args[0] for call in calls]


def session(model: Doubler, start: int, outputs: int, calls_per_output: int, made: list[int] | None = None,
            closed: threading.Event | None = None) -> Program[None]:
    """``outputs`` outputs, each after ``calls_per_output`` model passes."""
    try:
        value = start
        for _ in range(outputs):
            for _ in range(calls_per_output):
                value = yield Call(model.double, (value,))
            if made is not None:
                made.append(value)
            yield value
    finally:
        if closed is not None:
            closed.set()


@pytest.fixture
def batcher() -> Any:
    worker = Batcher("streams", max_batch=8)
    worker.start()
    yield worker
    worker.stop(5)


async def read_all(stream: SteppedStream, delay: float = 0.0) -> list[int]:
    items = []
    async for item in stream:
        items.append(item)
        await asyncio.sleep(delay)
    return items


def test_concurrent_streams_stay_in_step_through_every_pass(batcher: Batcher) -> None:
    model = Doubler()

    async def main() -> list[list[int]]:
        release = hold(batcher)  # all three start in the same turn
        streams = [SteppedStream(batcher, session(model, start, outputs=5, calls_per_output=3), ahead=100)
                   for start in (1, 2, 3)]
        release.set()
        return await asyncio.gather(*(read_all(s) for s in streams))

    results = asyncio.run(main())
    assert results == [[start * 2 ** (3 * k) for k in range(1, 6)] for start in (1, 2, 3)]
    assert model.passes == [3] * 15  # 5 outputs x 3 passes, every pass for all three sessions


def test_a_stream_pauses_when_its_reader_falls_behind_and_resumes_when_it_reads(batcher: Batcher) -> None:
    model, made = Doubler(), []

    async def main() -> list[int]:
        stream = SteppedStream(batcher, session(model, 1, outputs=10, calls_per_output=1, made=made), ahead=2)
        first = await stream.__anext__()
        await asyncio.sleep(0.3)  # the worker would finish all 10 outputs in far less
        assert len(made) == 3  # the one read plus two ahead
        return [first] + await read_all(stream)

    assert asyncio.run(main()) == [2 ** k for k in range(1, 11)]
    assert len(made) == 10


def test_streams_beyond_max_batch_take_turns_instead_of_waiting_for_whole_streams() -> None:
    worker = Batcher("one", max_batch=1)
    worker.start()
    model, order = Doubler(), []
    try:
        async def reader(stream: SteppedStream, name: str) -> None:
            async for _ in stream:
                order.append(name)

        async def main() -> None:
            streams = [SteppedStream(worker, session(model, 1, outputs=4, calls_per_output=2)) for _ in "ab"]
            await asyncio.gather(reader(streams[0], "a"), reader(streams[1], "b"))

        asyncio.run(main())
    finally:
        worker.stop(5)
    assert sorted(order) == ["a"] * 4 + ["b"] * 4
    assert order.index("b") < order.index("a") + 4, f"b waited for all of a: {order}"
    assert set(model.passes) == {1}


def test_closing_a_paused_stream_closes_its_program_on_the_worker(batcher: Batcher) -> None:
    model, closed = Doubler(), threading.Event()

    async def main() -> None:
        stream = SteppedStream(batcher, session(model, 1, outputs=1000, calls_per_output=1, closed=closed))
        await stream.__anext__()
        await asyncio.sleep(0.1)  # now paused two outputs ahead
        stream.close()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(main())
    assert closed.wait(2.0)
    assert len(model.passes) < 10


def test_a_failing_program_raises_in_the_reader_after_its_earlier_outputs(batcher: Batcher) -> None:
    def failing() -> Program[None]:
        yield 1
        raise ValueError("boom")

    async def main() -> list[int]:
        got = []
        with pytest.raises(ValueError, match="boom"):
            async for item in SteppedStream(batcher, failing()):
                got.append(item)
        return got

    assert asyncio.run(main()) == [1]


def test_a_released_pause_resumes_the_task_and_cancel_wakes_a_paused_one(batcher: Batcher) -> None:
    pause, closed = Pause(), threading.Event()

    def waits() -> Program[str]:
        try:
            yield pause
            return "resumed"
        finally:
            closed.set()

    assert batcher.submit(lambda: "others still run").result(5) == "others still run"
    resumed = batcher.submit_program(waits())
    assert batcher.submit(lambda: "while it is paused").result(5) == "while it is paused"
    pause.release()
    assert resumed.result(5) == "resumed"

    pause, closed = Pause(), threading.Event()
    cancelled = batcher.submit_program(waits())
    assert batcher.submit(lambda: None).result(5) is None  # it has reached the pause by now
    batcher.cancel(cancelled)
    assert closed.wait(2.0)
    with pytest.raises(Exception) as raised:
        cancelled.result(5)
    assert type(raised.value).__name__ == "CancelledError"


# ----------------------------------------------------------------------------- which groups run in a turn


class Keyed:
    """A fake model with kinds of pass (``a``, ``b``, ``c``) that batch separately; logs ``(kind, rows)`` per pass."""

    def __init__(self) -> None:
        self.passes: list[tuple[str, int]] = []

    def a(self, x: int) -> int:
        return self.run_batch([Call(self.a, (x,))])[0]

    def b(self, x: int) -> int:
        return self.run_batch([Call(self.b, (x,))])[0]

    def c(self, x: int) -> int:
        return self.run_batch([Call(self.c, (x,))])[0]

    def batch_key(self, call: Call) -> Hashable | None:
        return call.method.__name__

    def run_batch(self, calls: Sequence[Call]) -> list[int]:
        self.passes.append((calls[0].method.__name__, len(calls)))
        return [call.args[0] + 1 for call in calls]


def program(model: Keyed, kinds: str, log: list[str] | None = None, name: str = "") -> Program[int]:
    value = 0
    for kind in kinds:
        value = yield Call(getattr(model, kind), (value,))
        if log is not None:
            log.append(name)
    return value


def _run_together(worker: Batcher, programs: list[Program[int]]) -> list[int]:
    release = hold(worker)  # every program starts in the same turn
    futures = [worker.submit_program(p) for p in programs]
    release.set()
    return [f.result(10) for f in futures]


def test_a_smaller_group_waits_for_the_larger_one_and_joins_its_next_pass() -> None:
    model = Keyed()
    worker = Batcher("phases", max_batch=8, patience=4)
    worker.start()
    try:
        # three sessions about to run pass a then b, one already at b: out of phase by one call
        results = _run_together(worker, [program(model, "ab") for _ in range(3)] + [program(model, "b")])
    finally:
        worker.stop(5)
    assert results == [2, 2, 2, 1]
    assert model.passes == [("a", 3), ("b", 4)]  # the lone b waited one turn and rode along


def test_without_patience_every_group_runs_every_turn() -> None:
    model = Keyed()
    worker = Batcher("eager", max_batch=8, patience=0)
    worker.start()
    try:
        _run_together(worker, [program(model, "ab") for _ in range(3)] + [program(model, "b")])
    finally:
        worker.stop(5)
    assert model.passes == [("a", 3), ("b", 1), ("b", 3)]
    stats = {kind.split(".")[-1]: (s.calls, s.tasks) for kind, s in worker.call_stats.items()}
    assert stats == {"a": (1, 3), "b": (2, 4)}  # what the worker logs at stop: calls and tasks served by kind
    assert "tasks each" in worker.describe_calls()


def after_bookkeeping(model: Keyed, log: list[str], bookkeeping: int = 1) -> Program[int]:
    """``bookkeeping`` calls that cannot batch (like a semi-AR commit that reuses its cache), then passes a and b."""
    value = 0
    for _ in range(bookkeeping):
        value = yield Call(lambda x: log.append("alone") or x, (value,))
    value = yield Call(model.a, (value,))
    log.append("a")
    return (yield Call(model.b, (value,)))


def test_a_call_that_cannot_batch_runs_first_and_its_task_joins_the_same_turn() -> None:
    model, log = Keyed(), []
    worker = Batcher("bookkeeping", max_batch=8, patience=0)
    worker.start()
    try:
        results = _run_together(worker, [program(model, "ab") for _ in range(3)] + [after_bookkeeping(model, log)])
    finally:
        worker.stop(5)
    assert results == [2, 2, 2, 2]
    assert model.passes == [("a", 4), ("b", 4)]  # not ("a", 3), ("a", 1), ...: no turn lost to the bookkeeping
    assert log == ["alone", "a"]


def test_a_task_chaining_calls_that_cannot_batch_does_not_hold_up_the_others() -> None:
    from tokenspeech.serving.batcher import ALONE_ROUNDS

    model, log = Keyed(), []
    worker = Batcher("chain", max_batch=8, patience=0)
    worker.start()
    try:
        results = _run_together(worker, [program(model, "a", log, "crowd") for _ in range(3)]
                                + [after_bookkeeping(model, log, bookkeeping=3 * ALONE_ROUNDS)])
    finally:
        worker.stop(5)
    assert results == [1, 1, 1, 2]
    # the crowd's pass ran in the first turn, after a bounded chain: the rounds run first, then one more
    # call that cannot batch runs in the turn's groups (which put such calls first)
    assert log.index("crowd") == ALONE_ROUNDS + 1
    assert log.count("alone") == 3 * ALONE_ROUNDS


def test_a_waiting_group_runs_after_patience_turns_even_if_the_crowd_never_comes() -> None:
    model, log = Keyed(), []
    worker = Batcher("starve", max_batch=8, patience=2)
    worker.start()
    try:
        _run_together(worker, [program(model, "a" * 10, log, "crowd") for _ in range(3)]
                      + [program(model, "b", log, "lone")])
    finally:
        worker.stop(5)
    # turns 1 and 2: the crowd's a passes while b waits; turn 3: b has waited 2 turns and runs too
    assert log.index("lone") == 2 * 3 + 3
    assert ("b", 1) in model.passes and model.passes.count(("a", 3)) == 10


def lone_b_twice(model: Keyed, settle: bool) -> Program[int]:
    """Two b passes; with ``settle``, SETTLED between them (the first is what an eager caller waits for)."""
    value = yield Call(model.b, (0,))
    if settle:
        assert (yield SETTLED) is None
    return (yield Call(model.b, (value,)))


@pytest.mark.parametrize("eager", [True, False])
def test_an_eager_task_skips_patience_until_it_settles(eager: bool) -> None:
    model = Keyed()
    worker = Batcher("first-chunk", max_batch=8, patience=2)
    worker.start()
    try:
        release = hold(worker)
        crowd = [worker.submit_program(program(model, "aaaa")) for _ in range(3)]
        lone = worker.submit_program(lone_b_twice(model, settle=eager), eager=eager)
        release.set()
        assert [f.result(10) for f in crowd] == [4, 4, 4] and lone.result(10) == 2
    finally:
        worker.stop(5)
    a3, b1 = ("a", 3), ("b", 1)
    if eager:  # its first b runs first in the first turn; settled, its second b waits two turns like any other
        assert model.passes == [b1, a3, a3, a3, a3, b1]
    else:  # its first b waits two turns for the crowd's a passes
        assert model.passes == [a3, a3, a3, b1, a3, b1]


def test_a_stream_is_eager_until_its_first_output() -> None:
    model = Keyed()

    def chunks() -> Program[None]:
        for _ in range(2):
            yield (yield Call(model.b, (0,)))

    async def main() -> list[int]:
        release = hold(worker)
        crowd = [worker.submit_program(program(model, "aaaa")) for _ in range(3)]
        stream = SteppedStream(worker, chunks(), ahead=10)
        release.set()
        outputs = await read_all(stream)
        assert [await asyncio.wrap_future(f) for f in crowd] == [4, 4, 4]
        return outputs

    worker = Batcher("stream-first-chunk", max_batch=8, patience=2)
    worker.start()
    try:
        assert asyncio.run(main()) == [1, 1]
    finally:
        worker.stop(5)
    assert model.passes == [("b", 1), ("a", 3), ("a", 3), ("a", 3), ("a", 3), ("b", 1)]


def first_chunk(model: Keyed, log: list[str]) -> Program[int]:
    """A stream's way to its first output: conditioning (c), a pass (a), bookkeeping alone, the codec (b)."""
    value = yield Call(model.c, (0,))
    value = yield Call(model.a, (value,))
    value = yield Call(lambda x: log.append("commit") or x, (value,))
    value = yield Call(model.b, (value,))
    log.append("first output")
    yield SETTLED
    return (yield Call(model.b, (value,)))


@pytest.mark.parametrize("patience", [0, 2])
def test_an_eager_task_rides_every_later_group_of_its_turn_to_its_first_output(patience: int) -> None:
    model, log = Keyed(), []
    worker = Batcher("first-turn", max_batch=8, patience=patience)
    worker.start()
    try:
        release = hold(worker)
        # a crowd at the pass (a) and one at the codec step (b), as in a server under load
        crowd = [worker.submit_program(program(model, "ab" * 3, log, "crowd")) for _ in range(3)]
        codec = worker.submit_program(program(model, "b" + "ab" * 3))
        stream = worker.submit_program(first_chunk(model, log), eager=True)
        release.set()
        assert [f.result(10) for f in crowd] == [6, 6, 6] and codec.result(10) == 7 and stream.result(10) == 4
    finally:
        worker.stop(5)
    # turn 1: its c runs first, it joins the crowd's a, commits at once and joins the b of the turn
    assert model.passes[:3] == [("c", 1), ("a", 4), ("b", 2)]
    assert log[:5] == ["crowd"] * 3 + ["commit", "first output"]  # all in the first turn


def test_patience_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="patience"):
        Batcher("bad", patience=-1)
