"""JSON Lines input: one record per line, every error naming the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenspeech.errors import ConfigError


def json_records(lines: Iterable[str], source: str | Path, hint: str = "") -> Iterator[tuple[int, Any]]:
    """``(line number from 1, parsed value)`` for each non-blank line.

    Raises :class:`ConfigError` ``"<source>:<n>: not valid JSON (<reason>)<hint>"`` at the first bad line.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}:{number}: not valid JSON ({error.msg}){hint}") from error
        yield number, record
