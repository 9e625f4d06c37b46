"""Helpers shared by bench/asr.py and bench/tts.py: corpus rows, clocks, threads, tables, errors.

The bench scripts run as ``python bench/<name>.py``, so this folder is on
``sys.path`` and they import this module as ``_common``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

RATE = 16000  # what every recogniser here (ours, Whisper, PocketSphinx) listens to
TEACHER_VOICE = "joe"

T = TypeVar("T")


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Row:
    """One manifest line of the corpus: ``path`` made absolute."""

    id: str
    split: str
    text: str
    voice: str
    path: Path
    duration: float


@dataclass(frozen=True)
class Clip:
    """One loaded test clip of a benchmark set."""

    id: str
    set: str
    voice: str
    text: str
    wav: np.ndarray  # [T] float32, 16 kHz

    @property
    def seconds(self) -> float:
        return self.wav.size / RATE


def read_split(corpus: Path, split: str) -> list[Row]:
    """The rows of ``CORPUS/<split>.jsonl`` (lines with an ``error`` field are skipped)."""
    listing = corpus / f"{split}.jsonl"
    if not listing.is_file():
        fail(f"{listing} not found; pass --corpus with a folder holding {split}.jsonl "
             "(build one with `tokenspeech data build`)")
    rows = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "error" in record:
            continue
        rows.append(Row(str(record["id"]), split, str(record["text"]), str(record.get("voice", "")),
                        corpus / record["path"], float(record.get("duration", 0.0))))
    return rows


def sample(rows: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` rows drawn without replacement by ``seed`` (all of them when there are fewer)."""
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


# ----------------------------------------------------------------------------- clocks and threads


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) plus its finished child processes.

    One clock for in-process engines and for programs such as ``espeak-ng``;
    unlike wall time it is not inflated by other work on the machine.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Timed:
    """A result with the CPU and wall seconds it took."""

    value: Any
    cpu: float
    wall: float


def timed(fn: Callable[..., Any], *args: Any) -> Timed:
    """``fn(*args)`` with its CPU and wall seconds."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    value = fn(*args)
    return Timed(value, cpu_seconds() - cpu, time.perf_counter() - wall)


def _machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def foreign_load(probe_seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes during a short probe (None where /proc/stat is missing)."""
    try:
        machine, own = _machine_busy_seconds(), cpu_seconds()
        time.sleep(probe_seconds)
        return max(0.0, (_machine_busy_seconds() - machine) - (cpu_seconds() - own)) / probe_seconds
    except OSError:
        return None


def warn_if_busy(n_threads: int) -> float | None:
    """Warn when other work occupies cores that ``n_threads`` of ours need; returns the foreign load."""
    load = foreign_load()
    cores = os.cpu_count() or 1
    if load is not None and load + n_threads > cores + 0.2:
        print(f"warning: other processes keep {load:.1f} of {cores} cores busy; with {n_threads} thread(s) of "
              "ours, wall-clock figures (wall RTF, first audio) will be inflated, most with 2 threads; "
              "CPU RTF much less. Run on an idle machine for figures to quote.", file=sys.stderr)
    return load


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch (and OpenMP / BLAS users initialised later) on ``n`` threads inside the block.

    Engines with their own thread knob (CTranslate2, ONNX Runtime) get ``n``
    where they are built; this covers everything that reads the global settings.
    """
    if not 1 <= n <= 2:
        fail(f"--threads must be 1 or 2 (got {n}): comparisons are only fair at one fixed small count")
    import torch

    from tokenspeech.eval.timing import limit_threads

    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed once parallel work has started; harmless
    with limit_threads(n):
        yield


# ----------------------------------------------------------------------------- output


def fail(message: str) -> NoReturn:
    """Stop with a message a person can act on (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def aligned_cache_dir(run: Path) -> Path:
    """``run/cache`` of a ``tokenspeech train tts`` run that has dev durations, else :func:`fail`."""
    cache_dir = run / "cache"
    if not (cache_dir / "durations-dev.npz").is_file():
        fail(f"{cache_dir} has no durations-dev.npz: pass the folder of a TTS run that got past its durations phase")
    return cache_dir


def load_or_fail(load: Callable[[], T], what: str) -> T:
    """``load()``, turning a missing or broken model into :func:`fail` with the way out."""
    from tokenspeech.errors import ModelLoadError

    try:
        return load()
    except ModelLoadError as error:
        hint = ""
        if "not found" in str(error):
            hint = (f"\n  Until a trained {what} ships in tokenspeech/assets, pass --model PATH "
                    "(its .safetensors; the .json card beside it).")
        fail(f"{error}{hint}")


def number(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """``value`` formatted, or an en dash when it is missing or not finite."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:{spec}}{suffix}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def split_list(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated option value, every item checked against ``allowed``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        fail(f"{option}: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}")
    return items
