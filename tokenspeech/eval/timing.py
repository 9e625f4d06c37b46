"""Speed measurements: real-time factor and thread limits.

``rtf`` (real-time factor) is processing seconds per second of audio: below 1
is faster than real time. ``x_real_time`` is its inverse ("12x real time").
CPU seconds are the whole process's (all threads), so ``cpu / wall`` shows
how many cores the work kept busy.

Benchmarks are only comparable at a fixed thread count: wrap them in
:func:`limit_threads`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from tokenspeech.errors import ConfigError

logger = logging.getLogger(__name__)

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Timing:
    """Mean wall and CPU seconds of one run of the measured function."""

    wall_seconds: float
    cpu_seconds: float
    audio_seconds: float
    repeats: int

    @property
    def rtf(self) -> float:
        """Wall seconds per second of audio (lower is faster)."""
        return self.wall_seconds / self.audio_seconds

    @property
    def x_real_time(self) -> float:
        """Seconds of audio per wall second (higher is faster)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def measure_rtf(fn: Callable[[], object], audio_seconds: float, repeats: int = 1, warmup: int = 0) -> Timing:
    """Run ``fn()`` ``warmup`` times unmeasured, then ``repeats`` times; return mean timings.

    ``audio_seconds`` is the duration of audio one call processes or produces.
    """
    if audio_seconds <= 0:
        raise ConfigError(f"audio_seconds must be positive, got {audio_seconds}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    wall = (time.perf_counter() - wall_start) / repeats
    cpu = (time.process_time() - cpu_start) / repeats
    return Timing(wall_seconds=wall, cpu_seconds=cpu, audio_seconds=audio_seconds, repeats=repeats)


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Use ``n`` compute threads inside the block; restore the previous setting after.

    Sets ``torch.set_num_threads`` when torch is already imported (it is not
    imported here), and the OpenMP / MKL / OpenBLAS environment variables that
    subprocesses and libraries initialised later read.
    """
    if n < 1:
        raise ConfigError(f"thread count must be >= 1, got {n}")
    saved_env = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    os.environ.update({name: str(n) for name in THREAD_ENV_VARS})
    if torch is not None:
        torch.set_num_threads(n)
    logger.debug("limited compute to %d thread(s)", n)
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch is not None and saved_torch is not None:
            torch.set_num_threads(saved_torch)
