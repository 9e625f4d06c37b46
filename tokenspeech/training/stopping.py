"""Stop a training run cleanly on Ctrl-C or SIGTERM: finish the step, checkpoint, export, exit.

Training runs for hours in the background (``nohup``); killing one between
checkpoints used to lose up to a checkpoint interval of work. Inside
:func:`stop_requests` the first SIGINT or SIGTERM only sets a flag that the
training loop reads after each step, as if its time limit had passed; a
second SIGINT aborts at once (KeyboardInterrupt), for a run that must not
finish its step.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)


class StopRequest:
    """Whether a stop was asked for; :attr:`requested` is read by the training loop after every step."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def ask(self, name: str) -> None:
        self.requested, self.signal_name = True, name


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a :class:`StopRequest` for the duration (only on the main thread, where
    Python delivers signals; elsewhere the request simply never comes)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if request.requested and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort without the checkpoint
        request.ask(name)
        logger.warning("%s: stopping after this step with a checkpoint (resume with --resume); "
                       "press Ctrl-C again to abort without one", name)

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
