"""Batch outputs: result rows, subtitles, and the sinks that write them.

JSONL and txt results are appended one complete line at a time and fsync'd,
so a killed run loses at most the line being written, which ``resume``
detects and drops. SRT and WebVTT cues are grouped from word timings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Mapping, Protocol, Sequence, TextIO

from tokenspeech.asr.base import WordTiming
from tokenspeech.asr.inputs import AudioInput
from tokenspeech.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "txt", "srt", "vtt")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".txt": "txt", ".srt": "srt", ".vtt": "vtt"}


@dataclass(frozen=True)
class FileResult:
    """The outcome for one input: a transcript, or ``error`` saying why there is none."""

    path: str
    text: str = ""
    duration: float | None = None  # seconds of audio, when known
    words: tuple[WordTiming, ...] = ()
    error: str | None = None
    id: str | None = None
    reference: str | None = None

    def to_json(self) -> dict:
        """The JSONL row; ``id`` and ``reference`` only when the manifest gave them."""
        row: dict = {"path": self.path}
        if self.id is not None:
            row["id"] = self.id
        row["text"] = self.text
        row["duration"] = None if self.duration is None else round(self.duration, 3)
        row["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words]
        row["error"] = self.error
        if self.reference is not None:
            row["reference"] = self.reference
        return row


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``start``/``end`` in seconds."""

    start: float
    end: float
    text: str


def subtitle_cues(result: FileResult, max_seconds: float = 7.0, max_chars: int = 42,
                  max_pause: float = 1.0) -> list[Cue]:
    """Group a result's words into cues of at most ``max_seconds`` and ``max_chars``.

    A pause longer than ``max_pause`` also starts a new cue. Without word
    timings the words are spread evenly over the file's duration. Cues come
    out in order, not overlapping, each at least 1 ms long.
    """
    words = list(result.words) or _even_timings(result.text, result.duration or 0.0)
    groups: list[list[WordTiming]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (current is None or word.end - current[0].start > max_seconds or word.start - current[-1].end > max_pause
                or len(" ".join(w.word for w in current)) + 1 + len(word.word) > max_chars):
            groups.append([word])
        else:
            current.append(word)
    cues: list[Cue] = []
    for group in groups:
        start = max(round(group[0].start, 3), cues[-1].end if cues else 0.0)
        end = max(round(group[-1].end, 3), round(start + 0.001, 3))
        cues.append(Cue(start, end, " ".join(w.word for w in group)))
    return cues


def _even_timings(text: str, duration: float) -> list[WordTiming]:
    words = text.split()
    slot = duration / len(words) if words else 0.0
    return [WordTiming(word, i * slot, (i + 1) * slot) for i, word in enumerate(words)]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{separator}{millis % 1000:03d}"


def format_srt(cues: Sequence[Cue]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line after each."""
    return "".join(f"{n}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n\n"
                   for n, c in enumerate(cues, 1))


def format_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text: ``WEBVTT`` header, cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``, text escaped."""
    def escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return "WEBVTT\n\n" + "".join(f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{escape(c.text)}\n\n"
                                  for c in cues)


def _txt_line(result: FileResult) -> str:
    return f"{result.path}\t{' '.join(result.text.split())}"


# --------------------------------------------------------------------------- output


@dataclass(frozen=True)
class OutputOptions:
    """What to do when the output already exists."""

    resume: bool = False  # keep what is there, skip the inputs it holds
    overwrite: bool = False  # start again from nothing
    retry_failed: bool = False  # with resume: drop failed rows and transcribe those files again

    def validate(self) -> None:
        """Raise :class:`ConfigError` for contradictory choices."""
        if self.resume and self.overwrite:
            raise ConfigError("--resume keeps the existing output and --overwrite replaces it; pick one")
        if self.retry_failed and not self.resume:
            raise ConfigError("--retry-failed works with --resume")


class ResultSink(Protocol):
    """Where results go. ``done`` maps paths already in the output to their error (None = transcribed)."""

    done: Mapping[str, str | None]

    def write(self, result: FileResult) -> None:
        """Record one result durably."""
        ...

    def close(self) -> None:
        """Release the output."""
        ...


def resolve_format(fmt: str | None, output: str | None) -> str:
    """``fmt`` when given, else from the output's suffix, else ``jsonl``."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    return _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "jsonl") if output else "jsonl"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class LineSink:
    """JSONL or txt results, one line per file, appended and fsync'd line by line (or to a stream).

    txt lines are ``path<TAB>text`` and hold transcribed files only.
    """

    def __init__(self, fmt: str, stream: TextIO | None = None, path: Path | None = None,
                 done: Mapping[str, str | None] | None = None) -> None:
        self.format = fmt
        self.done = dict(done or {})
        self._stream = stream
        self._file = path.open("ab") if path is not None else None

    def write(self, result: FileResult) -> None:
        if self.format == "txt" and result.error is not None:
            return
        line = json.dumps(result.to_json(), ensure_ascii=False) if self.format == "jsonl" else _txt_line(result)
        if self._file is not None:
            self._file.write((line + "\n").encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        elif self._stream is not None:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class SubtitleSink:
    """SRT or WebVTT: one file per input (written atomically) or one input to a stream.

    Failed inputs get no file; they are reported in the summary.
    """

    def __init__(self, fmt: str, targets: Mapping[str, Path] | None = None, stream: TextIO | None = None,
                 done: Mapping[str, str | None] | None = None) -> None:
        self.format = fmt
        self.done = dict(done or {})
        self._targets = dict(targets or {})
        self._stream = stream

    def write(self, result: FileResult) -> None:
        if result.error is not None:
            return
        cues = subtitle_cues(result)
        text = format_srt(cues) if self.format == "srt" else format_vtt(cues)
        if self._stream is not None:
            self._stream.write(text)
            self._stream.flush()
            return
        target = self._targets[result.path]
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, text.encode("utf-8"))

    def close(self) -> None:
        return None


def open_sink(output: str | None, fmt: str, inputs: Sequence[AudioInput],
              options: OutputOptions = OutputOptions()) -> ResultSink:
    """Open where results go, per the rules in the ``transcribe`` help.

    JSONL/txt: ``output`` is a file (``None``: stdout). SRT/WebVTT: a file for
    a single input; a folder (existing, ending in ``/`` or without a suffix)
    gets one file per input, named after the input's path as written. An
    existing output is refused unless resumed or overwritten.
    """
    options.validate()
    if output is None or output == "-":
        if options.resume or options.overwrite:
            raise ConfigError("--resume and --overwrite need an output file: add -o OUT")
        if fmt in ("srt", "vtt") and len(inputs) > 1:
            raise ConfigError(f"{len(inputs)} inputs make one {fmt} file each: add -o FOLDER")
        return SubtitleSink(fmt, stream=sys.stdout) if fmt in ("srt", "vtt") else LineSink(fmt, stream=sys.stdout)
    target = Path(output)
    is_folder = target.is_dir() or output.endswith(("/", os.sep)) or not target.suffix
    if fmt in ("srt", "vtt"):
        if not is_folder and len(inputs) > 1:
            raise ConfigError(f"{len(inputs)} inputs make one {fmt} file each: -o must be a folder, not {output}")
        targets = _subtitle_targets(inputs, fmt, target) if is_folder else {inputs[0].path: target}
        existing = [path for path, file in targets.items() if file.exists()]
        if existing and not (options.resume or options.overwrite):
            raise ConfigError(f"{targets[existing[0]]} already exists; "
                              "add --resume to skip finished files or --overwrite to replace them")
        return SubtitleSink(fmt, targets=targets, done=dict.fromkeys(existing) if options.resume else {})
    if target.is_dir():
        raise ConfigError(f"{output} is a folder; {fmt} results go to one file (or use --format srt|vtt)")
    done: dict[str, str | None] = {}
    if target.exists() and target.stat().st_size > 0:
        if not (options.resume or options.overwrite):
            raise ConfigError(f"{output} already exists; add --resume to continue it or --overwrite to replace it")
        if options.resume:
            done = _recover(target, fmt, options.retry_failed)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not options.resume:
        target.write_bytes(b"")
    return LineSink(fmt, path=target, done=done)


def _subtitle_targets(inputs: Sequence[AudioInput], fmt: str, folder: Path) -> dict[str, Path]:
    """Subtitle file per input, named after its path as written (minus any root and ``..``), suffix
    replaced; the same name for a.wav and a.flac side by side keeps the second's suffix (a.flac.vtt)."""
    targets: dict[str, Path] = {}
    taken: set[Path] = set()
    for item in inputs:
        written = PurePath(item.path)
        relative = PurePath(*[part for part in written.parts if part not in (written.anchor, "..", ".")])
        candidates = [relative.with_suffix(f".{fmt}"), relative.with_name(f"{relative.name}.{fmt}")]
        candidates += [relative.with_name(f"{relative.name}.{n}.{fmt}") for n in range(2, len(inputs) + 2)]
        name = next(folder / c for c in candidates if folder / c not in taken)
        taken.add(name)
        targets[item.path] = name
    return targets


def _recover(path: Path, fmt: str, retry_failed: bool) -> dict[str, str | None]:
    """Paths already in a JSONL/txt output; drops a partly written last line (and failed rows
    when ``retry_failed``), rewriting the file atomically when anything was dropped."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        logger.warning("%s: dropping a partly written last line from an interrupted run", path)
    try:
        lines = complete.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 results file ({error}); use another -o or --overwrite") from error
    done: dict[str, str | None] = {}
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        result_path, error = _parse_line(line, fmt, path, number)
        if error is not None and retry_failed:
            continue
        done[result_path] = error
        kept.append(line)
    if len(complete) < len(data) or len(kept) < len(lines):
        _atomic_write(path, "".join(line + "\n" for line in kept).encode("utf-8"))
    return done


def _parse_line(line: str, fmt: str, path: Path, number: int) -> tuple[str, str | None]:
    if fmt == "txt":
        return line.split("\t", 1)[0], None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{number}: not a JSON line ({error.msg}); is this a results file? "
                          "Use another -o or --overwrite") from error
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        raise ConfigError(f'{path}:{number}: a results row needs a "path"; use another -o or --overwrite')
    error = row.get("error")
    return row["path"], None if error is None else str(error)
