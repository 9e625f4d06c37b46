"""Reading an export directory: ``manifest.json`` plus lazily opened graph sessions.

The manifest layout and the names are defined once in
:mod:`tokenspeech.export.manifest` (torch-free); here they are read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenspeech.errors import ModelLoadError
from tokenspeech.export.manifest import FORMAT_VERSION, MANIFEST_FILE, NAMES
from tokenspeech.runtime.sessions import Graph, RuntimeOptions


@dataclass(frozen=True)
class ExportDirectory:
    """A directory written by ``tokenspeech export``: its manifest and where its graphs are."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> ExportDirectory:
        """Read ``path/manifest.json``; :class:`ModelLoadError` when missing, unreadable or of another version."""
        root = Path(path)
        file = root / MANIFEST_FILE
        if not file.is_file():
            raise ModelLoadError(f"{root}: no {MANIFEST_FILE}; make an export with "
                                 "`tokenspeech export tts asr -o DIR` and pass DIR")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{file}: unreadable manifest ({error})") from error
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"{file}: manifest format {manifest.get('format_version')!r} is not "
                                 f"{FORMAT_VERSION}; re-export with this tokenspeech")
        return cls(root, manifest)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("models", {}))

    def model(self, kind: str) -> dict[str, Any]:
        """The manifest entry of the ``kind`` model (codec, tts, asr)."""
        models = self.manifest.get("models", {})
        if kind not in models:
            raise ModelLoadError(f"{self.root} has no {kind} model (it has: {', '.join(models) or 'none'}); "
                                 f"export one with `tokenspeech export {'tscodec' if kind == 'codec' else kind} "
                                 f"-o {self.root}`")
        return models[kind]

    def names(self, kind: str) -> Any:
        """The names object of ``kind``, built from the names the export wrote."""
        return NAMES[kind].from_json(self.model(kind)["names"])

    def graphs(self, kind: str, options: RuntimeOptions) -> GraphSet:
        return GraphSet(self, kind, options)


class GraphSet:
    """The graphs of one model; each session is created on first use and then kept."""

    def __init__(self, export: ExportDirectory, kind: str, options: RuntimeOptions) -> None:
        self.export = export
        self.kind = kind
        self.options = options
        self.entries: dict[str, Any] = export.model(kind)["graphs"]
        self._open: dict[str, Graph] = {}

    def has(self, graph: str) -> bool:
        return graph in self.entries

    def open_all(self) -> None:
        """Create every session now (a server does this at start, so load errors show there, not mid-request)."""
        for graph in self.entries:
            self[graph]

    def __getitem__(self, graph: str) -> Graph:
        if graph not in self._open:
            if graph not in self.entries:
                raise ModelLoadError(f"the {self.kind} export in {self.export.root} has no graph {graph!r} "
                                     f"(it has: {', '.join(self.entries)})")
            entry = self.entries[graph]
            self._open[graph] = Graph(self.export.root / entry["file"], entry, self.options)
        return self._open[graph]
