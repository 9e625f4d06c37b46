"""Optional ``tokenspeech train`` flags that map onto fields of a recipe's options dataclass (argparse only).

A flag left out stays ``None`` and is not passed on, so the options
dataclass keeps its own default: the defaults live in one place.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

Flag = tuple[str, type, str]  # (--flag-name, value type, help text)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Add each flag with ``default=None``."""
    for flag, kind, text in flags:
        parser.add_argument(flag, type=kind, default=None, help=text)


def given_options(args: argparse.Namespace, flags: Sequence[Flag], fields: Mapping[str, str] | None = None,
                  **extra: Any) -> dict[str, Any]:
    """``{field: value}`` for the flags (and ``extra`` values) that were given, i.e. are not ``None``.

    A flag's field is its name with ``_`` for ``-`` unless ``fields`` maps the flag to another name.
    """
    fields = fields or {}
    values = {fields.get(flag, _dest(flag)): getattr(args, _dest(flag)) for flag, _, _ in flags} | extra
    return {name: value for name, value in values.items() if value is not None}
