"""Ctrl-C / SIGTERM during training: a request to stop after the step, not an abort."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tokenspeech.training.stopping import stop_requests


def test_first_signal_sets_the_request_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_requests() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_ctrl_c_aborts() -> None:
    with pytest.raises(KeyboardInterrupt):
        with stop_requests() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)


def test_off_the_main_thread_nothing_is_installed() -> None:
    seen = []

    def worker() -> None:
        with stop_requests() as stop:
            seen.append((stop.requested, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, before)]
