"""Batch transcription: many audio files -> recogniser batches -> result files.

The flow, each step a small function:

1. :func:`expand_inputs` turns command-line arguments (files, folders, globs,
   ``@list.txt`` files, ``.jsonl`` manifests) into :class:`AudioInput` s, each
   keeping its path exactly as the user wrote it.
2. :func:`open_sink` opens the output (JSONL, txt, SRT, WebVTT; a file, a
   folder of subtitle files, or stdout) and, with ``resume``, reports which
   inputs it already holds.
3. :func:`transcribe_files` probes durations from file headers, sorts files
   longest first, groups them into batches by count and total seconds, loads
   the next batch on worker threads while the recogniser works on the current
   one, cuts recordings longer than ``recognizer.max_seconds`` at pauses
   (:mod:`tokenspeech.asr.segment`) and writes one result per file as soon as
   its batch is done. A bad file becomes a result with ``error`` set; it never
   stops the batch.

JSONL and txt results are appended one complete line at a time and fsync'd,
so a killed run loses at most the line being written, which ``resume``
detects and drops.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from tokenspeech.asr.base import DECODERS, Recognizer, Transcript
from tokenspeech.asr.inputs import AudioInput
from tokenspeech.asr.output import FileResult, ResultSink
from tokenspeech.asr.segment import VadOptions, find_speech_segments, stitch
from tokenspeech.audio import AudioLimits, load_audio
from tokenspeech.errors import AudioError, ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

_PREFETCH_GROUPS = 1  # batches loaded ahead of the one being recognised

T = TypeVar("T")


# --------------------------------------------------------------------------- planning


def probe_seconds(path: Path) -> float | None:
    """Duration from the file header (libsndfile, else ``ffprobe``); ``None`` when unknown."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        pass
    if shutil.which("ffprobe") is None:
        return None
    try:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                "default=noprint_wrappers=1:nokey=1", str(path)],
                               capture_output=True, text=True, check=False, timeout=60)
        return float(probe.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def group_by_budget(items: Sequence[T], seconds: Callable[[T], float], max_items: int,
                    max_seconds: float) -> list[list[T]]:
    """Consecutive groups of at most ``max_items`` items and ``max_seconds`` in total.

    An item longer than ``max_seconds`` gets a group of its own. Order is kept.
    """
    groups: list[list[T]] = []
    total = 0.0
    for item in items:
        length = seconds(item)
        if not groups or len(groups[-1]) >= max_items or total + length > max_seconds:
            groups.append([])
            total = 0.0
        groups[-1].append(item)
        total += length
    return groups


@dataclass(frozen=True)
class FileJob:
    """An input waiting to be transcribed, with its duration from the file header."""

    input: AudioInput
    seconds: float | None  # from the header; None when unknown


def plan_batches(jobs: Sequence[FileJob], max_items: int, max_seconds: float) -> list[list[FileJob]]:
    """Longest files first (unknown durations last), grouped by :func:`group_by_budget`."""
    ordered = sorted(jobs, key=lambda j: (j.seconds is None, -(j.seconds or 0.0)))
    return group_by_budget(ordered, lambda j: j.seconds or 0.0, max_items, max_seconds)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class BatchOptions:
    """How :func:`transcribe_files` batches and loads."""

    batch_size: int = 16  # most files (or segments) per recogniser call
    batch_seconds: float = 240.0  # most audio seconds per recogniser call (a longer segment goes alone)
    workers: int = 2  # threads decoding audio files ahead of the recogniser
    max_file_seconds: float | None = 4 * 3600.0  # longer files are reported, not loaded; None: no limit
    progress: bool = True
    vad: VadOptions = field(default_factory=VadOptions)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.batch_seconds <= 0:
            raise ConfigError(f"--batch-seconds must be positive, got {self.batch_seconds}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.max_file_seconds is not None and self.max_file_seconds <= 0:
            raise ConfigError(f"--max-duration must be positive, got {self.max_file_seconds}")
        self.vad.validate()


@dataclass(frozen=True)
class BatchReport:
    """What a run did. ``audio_seconds`` counts the files transcribed in this run."""

    ok: int
    failures: tuple[tuple[str, str], ...]  # (path, reason) of this run
    skipped: int  # already in the output
    earlier_failures: tuple[tuple[str, str], ...]  # failed rows kept from an earlier run
    audio_seconds: float
    wall_seconds: float

    @property
    def speed(self) -> float:
        """Audio seconds transcribed per wall-clock second (``1/RTF``)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_status(self) -> int:
        """0 when every input has a transcript, 1 when any failed (now or in a resumed run)."""
        return 1 if self.failures or self.earlier_failures else 0


@dataclass(frozen=True)
class _Loaded:
    job: FileJob
    wav: np.ndarray | None = None
    error: str | None = None


def _load(job: FileJob, rate: int, limit: float | None) -> _Loaded:
    if limit is not None and job.seconds is not None and job.seconds > limit:
        return _Loaded(job, error=f"the audio is too long ({job.seconds:.0f} s > {limit:.0f} s); "
                                  "raise --max-duration or split the file")
    try:
        wav, _ = load_audio(job.input.file, rate, AudioLimits(max_seconds=limit))
    except AudioError as error:
        return _Loaded(job, error=error.problem)
    except Exception as error:  # one bad file must never stop the batch
        logger.debug("loading %s failed", job.input.path, exc_info=True)
        return _Loaded(job, error=f"cannot load the audio ({type(error).__name__}: {error})")
    return _Loaded(job, wav=wav)


def _prefetched(groups: Sequence[list[FileJob]], pool: ThreadPoolExecutor,
                load: Callable[[FileJob], _Loaded]) -> Iterator[list[_Loaded]]:
    """Loaded groups in order, the next ones decoding on ``pool`` while the caller works."""
    upcoming = iter(groups)
    pending: deque[list[Future[_Loaded]]] = deque()
    for _ in range(_PREFETCH_GROUPS + 1):
        group = next(upcoming, None)
        if group is not None:
            pending.append([pool.submit(load, job) for job in group])
    while pending:
        futures = pending.popleft()
        group = next(upcoming, None)
        if group is not None:
            pending.append([pool.submit(load, job) for job in group])
        yield [future.result() for future in futures]


@dataclass(frozen=True)
class _Piece:
    owner: int  # index into the loaded group
    start: int  # first sample within the file
    audio: np.ndarray


def _pieces(loaded: Sequence[_Loaded], recognizer: Recognizer, vad: VadOptions) -> list[_Piece]:
    """Each loaded file whole, or cut at pauses when longer than the recogniser accepts."""
    limit = int(recognizer.max_seconds * recognizer.sample_rate)
    pieces = []
    for owner, item in enumerate(loaded):
        if item.wav is None:
            continue
        spans = ([(0, len(item.wav))] if len(item.wav) <= limit else
                 find_speech_segments(item.wav, recognizer.sample_rate, recognizer.max_seconds, vad))
        pieces += [_Piece(owner, start, item.wav[start:end]) for start, end in spans]
    return pieces


def _recognize(audios: Sequence[np.ndarray], recognizer: Recognizer) -> list[Transcript | str]:
    """Transcripts in order; when the batch fails, each item alone, so one bad input fails alone."""
    try:
        results = recognizer.transcribe_batch(list(audios))
        if len(results) != len(audios):
            raise RuntimeError(f"the recogniser returned {len(results)} results for {len(audios)} inputs")
        return list(results)
    except Exception as error:  # recogniser failures are reported per file, never fatal
        if len(audios) > 1:
            logger.warning("a batch of %d failed (%s); retrying its items one by one", len(audios), error)
            return [outcome for audio in audios for outcome in _recognize([audio], recognizer)]
        logger.debug("recognition failed", exc_info=True)
        return [f"recognition failed ({type(error).__name__}: {error})"]


def _transcribe_group(loaded: Sequence[_Loaded], recognizer: Recognizer,
                      options: BatchOptions) -> list[FileResult]:
    """Results for one loaded group: segments batched by budget, stitched back per file."""
    rate = recognizer.sample_rate
    pieces = sorted(_pieces(loaded, recognizer, options.vad), key=lambda p: -len(p.audio))
    outcomes: dict[int, list[tuple[_Piece, Transcript | str]]] = {i: [] for i in range(len(loaded))}
    for chunk in group_by_budget(pieces, lambda p: len(p.audio) / rate, options.batch_size, options.batch_seconds):
        for piece, outcome in zip(chunk, _recognize([p.audio for p in chunk], recognizer)):
            outcomes[piece.owner].append((piece, outcome))
    results = []
    for owner, item in enumerate(loaded):
        source = item.job.input
        row = FileResult(source.path, id=source.id, reference=source.reference,
                         duration=len(item.wav) / rate if item.wav is not None else item.job.seconds)
        parts = sorted(outcomes[owner], key=lambda pair: pair[0].start)
        error = item.error or next((o for _, o in parts if isinstance(o, str)), None)
        if error is not None:
            results.append(replace(row, error=error))
            continue
        merged = stitch([o for _, o in parts if isinstance(o, Transcript)], [p.start / rate for p, _ in parts])
        results.append(replace(row, text=merged.text, words=merged.words))
    return results


def _probe_all(todo: Sequence[AudioInput], pool: ThreadPoolExecutor) -> list[FileJob]:
    return [FileJob(item, seconds) for item, seconds in zip(todo, pool.map(lambda i: probe_seconds(i.file), todo))]


def transcribe_files(inputs: Sequence[AudioInput], recognizer: Recognizer, sink: ResultSink,
                     options: BatchOptions = BatchOptions()) -> BatchReport:
    """Transcribe every input not already in ``sink.done`` and write one result per file to ``sink``.

    Never raises for a bad file: its result carries ``error``. Interrupting
    (Ctrl-C) keeps every result written so far.
    """
    from tqdm import tqdm

    options.validate()
    began = time.monotonic()
    todo = [item for item in inputs if item.path not in sink.done]
    earlier = tuple((i.path, str(sink.done[i.path])) for i in inputs if sink.done.get(i.path) is not None)
    ok, audio_seconds, failures = 0, 0.0, []
    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="audio-loader")
    try:
        jobs = _probe_all(todo, pool)
        logger.info("%d file(s) to transcribe, %d already done", len(todo), len(inputs) - len(todo))
        bar = tqdm(total=sum(j.seconds or 0.0 for j in jobs), disable=not options.progress, desc="transcribe",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                              "[{elapsed}<{remaining}{postfix}]")
        load = partial(_load, rate=recognizer.sample_rate, limit=options.max_file_seconds)
        with bar:
            for loaded in _prefetched(plan_batches(jobs, options.batch_size, options.batch_seconds), pool, load):
                for result in _transcribe_group(loaded, recognizer, options):
                    sink.write(result)
                    if result.error is None:
                        ok, audio_seconds = ok + 1, audio_seconds + (result.duration or 0.0)
                    else:
                        failures.append((result.path, result.error))
                        logger.debug("%s: %s", result.path, result.error)
                speed = audio_seconds / max(time.monotonic() - began, 1e-9)
                _advance(bar, loaded, recognizer.sample_rate, ok, len(failures), speed)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return BatchReport(ok, tuple(failures), len(inputs) - len(todo), earlier, audio_seconds,
                       time.monotonic() - began)


def _advance(bar: Any, loaded: Sequence[_Loaded], rate: int, ok: int, failed: int, speed: float) -> None:
    """Move the bar by the group's audio; files whose header gave no duration add their real length."""
    for item in loaded:
        seconds = item.job.seconds
        if seconds is None:
            seconds = len(item.wav) / rate if item.wav is not None else 0.0
            bar.total += seconds
        bar.update(seconds)
    bar.set_postfix_str(f"{ok} ok, {failed} failed, {speed:.1f}x real time", refresh=False)


def format_summary(report: BatchReport, output: str | None = None) -> str:
    """A human summary: counts, audio hours, wall time, speed, and every failure with its reason."""
    lines = [f"{report.ok} file(s) transcribed, {len(report.failures)} failed"
             + (f", {report.skipped} already in {output or 'the output'}" if report.skipped else "")]
    if report.audio_seconds > 0:
        rtf = report.wall_seconds / report.audio_seconds
        lines.append(f"{report.audio_seconds / 3600:.2f} h of audio in {_clock(report.wall_seconds)}: "
                     f"{report.speed:.1f}x real time (RTF {rtf:.3f})")
    if report.failures:
        lines.append("failed:")
        lines += [f"  {path}: {reason}" for path, reason in report.failures]
    if report.earlier_failures:
        lines.append("failed in an earlier run (add --retry-failed to try again):")
        lines += [f"  {path}: {reason}" for path, reason in report.earlier_failures]
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# --------------------------------------------------------------------------- model


def make_recognizer(decoder: str, model_path: str | Path | None = None, threads: int = 0,
                    lm: str | Path | None = None, beam_size: int | None = None, precision: str = "fp32") -> Recognizer:
    """The shipped (or ``model_path``) ASR model with ``decoder``; ``threads`` > 0 sets torch's CPU threads.

    ``precision``: of the model's large matrix products (:mod:`tokenspeech.models.precision`).

    ``lm``: the character LM of the ctc and ar searches (default: the shipped one; ``"none"``: none, ctc greedy).
    Raises :class:`ModelLoadError` when the model code, weights or LM are missing.
    """
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")
    try:
        from tokenspeech.asr import recognizer as asr_models
    except ImportError as error:
        raise ModelLoadError(f"the ASR models are not available in this installation ({error}); "
                             "reinstall tokenspeech or use a build that ships tokenspeech.asr.recognizer") from error
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    from tokenspeech.models.precision import resolve_precision, set_precision

    resolved = resolve_precision(precision)  # a bad name fails before the weights load
    try:
        bundle = asr_models.load_asr_model(model_path)
    except OSError as error:
        raise ModelLoadError(f"cannot load the ASR model {model_path or '(shipped)'}: {error}") from error
    set_precision(bundle.model, resolved)
    from tokenspeech.asr.engine import LM_DECODERS
    from tokenspeech.asr.lm import load_lm

    language_model = load_lm(lm, bundle.vocabulary) if decoder in LM_DECODERS else None
    return asr_models.TorchRecognizer(bundle, asr_models.RecognizerOptions(decoder=decoder, beam_size=beam_size),
                                      language_model)
