"""Batch inputs: command-line arguments -> the audio files they name.

Arguments may be files, folders (searched recursively for audio), globs,
``@list.txt`` files (one argument per line, relative to the current folder) or
``.jsonl`` manifests (each line's ``path`` relative to the manifest's folder).
Every input keeps its path exactly as the user wrote it: that is the ``path``
of its result row and the key ``--resume`` matches on.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tokenspeech.errors import ConfigError
from tokenspeech.jsonl import json_records

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".webm",
                              ".mp4", ".mkv", ".mov", ".aif", ".aiff", ".au", ".caf", ".amr", ".spx", ".3gp"})
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class AudioInput:
    """One file to transcribe."""

    path: str  # exactly as the user (or the manifest) wrote it; the result's ``path``
    file: Path  # where to read it
    id: str | None = None  # from a manifest
    reference: str | None = None  # the manifest's ``text``


def expand_inputs(arguments: Sequence[str]) -> list[AudioInput]:
    """Every audio input named by ``arguments``, in order, duplicates (same file) removed.

    An argument is a file (kept whatever its extension; a missing one becomes
    an error result later), a folder (searched recursively for audio
    extensions, hidden entries skipped), a glob (``**`` recurses; only files
    with audio extensions), ``@LIST`` (a text file of such arguments, one per
    line, relative to the current folder; blank lines and ``#`` comments
    skipped) or a ``.jsonl`` manifest (``path`` relative to the manifest's
    folder, optional ``id`` and ``text``). Raises :class:`ConfigError` when
    nothing matches or a list/manifest is unreadable.
    """
    found = [item for argument in arguments for item in _expand(argument, lists_allowed=True)]
    inputs = _dedupe(found)
    if not inputs:
        raise ConfigError("no audio files matched " + " ".join(arguments)
                          + f" (folders and globs look for: {' '.join(sorted(AUDIO_EXTENSIONS))})")
    return inputs


def _expand(argument: str, lists_allowed: bool) -> list[AudioInput]:
    if argument.startswith("@") and lists_allowed:
        return _read_list(Path(argument[1:]))
    path = Path(argument)
    if path.is_dir():
        return _scan_directory(argument)
    if path.suffix.lower() == ".jsonl" and path.is_file():
        return _read_manifest(path)
    if not path.exists() and _GLOB_CHARACTERS & set(argument):
        return _expand_glob(argument)
    return [AudioInput(argument, path)]


def _is_audio(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS


def _scan_directory(folder: str) -> list[AudioInput]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if _is_audio(name)]
    if not found:
        logger.warning("%s: no audio files in this folder", folder)
    return [AudioInput(name, Path(name)) for name in found]


def _expand_glob(pattern: str) -> list[AudioInput]:
    inputs: list[AudioInput] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        if os.path.isdir(match):
            inputs += _scan_directory(match)
        elif _is_audio(os.path.basename(match)):
            inputs.append(AudioInput(match, Path(match)))
    if not inputs:
        logger.warning("%s: the pattern matched no audio files", pattern)
    return inputs


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the list ({error})") from error


def _read_list(path: Path) -> list[AudioInput]:
    lines = (line.strip() for line in _read_lines(path))
    return [item for line in lines if line and not line.startswith("#")
            for item in _expand(line, lists_allowed=False)]


def _read_manifest(manifest: Path) -> list[AudioInput]:
    inputs = []
    for number, record in json_records(_read_lines(manifest), manifest):
        if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"]:
            raise ConfigError(f'{manifest}:{number}: each manifest line needs a "path" string')
        ident, text = record.get("id"), record.get("text")
        inputs.append(AudioInput(record["path"], manifest.parent / record["path"],
                                 None if ident is None else str(ident), None if text is None else str(text)))
    return inputs


def _dedupe(inputs: Iterable[AudioInput]) -> list[AudioInput]:
    by_file: dict[str, AudioInput] = {}
    by_path: dict[str, AudioInput] = {}
    for item in inputs:
        key = os.path.normcase(os.path.abspath(item.file))
        if key in by_file:
            continue
        if item.path in by_path:
            raise ConfigError(f"two different files are both called {item.path!r} ({by_path[item.path].file} and "
                              f"{item.file}); results are keyed by path, so transcribe them in separate runs")
        by_file[key] = by_path[item.path] = item
    return list(by_file.values())
