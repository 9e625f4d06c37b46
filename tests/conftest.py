"""Fixtures shared by the test modules (helpers live in ``tiny_models``, ``tiny_exports``, ``serving_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared machine: one thread is as fast and does not fight other jobs for cores.

    Modules ask for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(one_thread: None) -> Iterator[Any]:
    """An in-process server with the tiny models (:class:`serving_harness.ServerThread`), one per module."""
    from serving_harness import ServerThread

    running = ServerThread().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tok() -> Any:
    """A random-weight EnCodec 24 kHz (:meth:`EncodecTokenizer.random`, seed 0), one per module."""
    from tokenspeech.codecs.encodec import EncodecTokenizer

    return EncodecTokenizer.random(seed=0)


@pytest.fixture(scope="module")
def tok_weights(tok: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tok`` saved as an ``encodec`` state dict file, as :func:`load_encodec` reads it."""
    path = tmp_path_factory.mktemp("weights") / "encodec_random.th"
    tok.save_weights(path)
    return path
