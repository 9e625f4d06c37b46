"""Build the synthetic speech corpus every tokenspeech model trains on.

Sentences come from real English text shipped by Debian and npm (fortunes,
WordNet usage examples, State of the Union addresses, Moby-Dick), are
normalised to their spoken form, split train/dev/test by text, and spoken by
the piper teacher voice (joe), many espeak-ng voices and flite/Festival diphone
voices. Audio is 16 kHz FLAC; manifests are JSON Lines.

examples:
  tokenspeech data build --out corpus                  # the full corpus (~35 h, about 1.5 hours on 2 cores)
  tokenspeech data build --out corpus --splits dev test heldout   # evaluation sets only (minutes)
  tokenspeech data build --out tiny --hours 0.05       # a few minutes of speech, same voice mix
  tokenspeech data build --out corpus --voices joe=21 espeak-variety=8
  tokenspeech data stats corpus                        # hours per voice and split (JSON)
  tokenspeech data card corpus                         # the same as Markdown tables

With the default options a new corpus follows the plan shipped in the package
(every sentence, voice and split fixed), so the corpus, and above all its
dev/test/held-out sets, are the same on every machine; --replan plans anew.

Run the same build command again to resume an interrupted build; add --extend
with larger --voices hours to grow a finished corpus without re-recording it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_VOICES = ("joe=21", "espeak-us=3", "espeak-gb-f=3", "espeak-variety=5", "diphone=3")


def _voice_hours(entries: list[str], total: float | None) -> tuple[tuple[str, float], ...]:
    from tokenspeech.errors import ConfigError

    hours = []
    for entry in entries:
        name, _, value = entry.partition("=")
        try:
            hours.append((name, float(value)))
        except ValueError:
            raise ConfigError(f"--voices takes FAMILY=HOURS, got {entry!r}") from None
    if total is not None:
        scale = total / sum(h for _, h in hours)
        hours = [(n, round(h * scale, 4)) for n, h in hours]
    return tuple(hours)


def _run_build(args: argparse.Namespace) -> int:
    from tokenspeech.data.build import SHIPPED_PLAN, BuildOptions, build_corpus
    from tokenspeech.errors import ConfigError

    try:
        options = BuildOptions(out=args.out, hours=_voice_hours(args.voices, args.hours), heldout=args.heldout,
                               dev_fraction=args.dev_fraction, test_fraction=args.test_fraction, seed=args.seed,
                               workers=args.workers, text_cache=args.text_cache, progress=not args.no_progress,
                               extend=args.extend, splits=tuple(args.splits),
                               shipped_plan=None if args.replan else SHIPPED_PLAN)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    stats = build_corpus(options)
    print(json.dumps(stats, indent=2))
    unfinished = stats["unfinished_by_split"]
    return 0 if not any(unfinished.get(split) for split in args.splits) else 1


def _run_stats(args: argparse.Namespace) -> int:
    from tokenspeech.errors import ConfigError

    path = args.corpus / "stats.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: build the corpus first (tokenspeech data build --out {args.corpus})")
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def _run_card(args: argparse.Namespace) -> int:
    from tokenspeech.data.card import render_tables
    from tokenspeech.errors import ConfigError

    path = args.corpus / "stats.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: build the corpus first (tokenspeech data build --out {args.corpus})")
    print(render_tables(json.loads(path.read_text(encoding="utf-8"))), end="")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="plan and synthesise a corpus (resumable)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build.add_argument("--out", type=Path, required=True, help="corpus folder (created; reused to resume)")
    build.add_argument("--hours", type=float, default=None,
                       help="total hours; scales the --voices hours proportionally")
    build.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES), metavar="FAMILY=HOURS",
                       help="hours per voice family (joe, espeak-us, espeak-gb-f, espeak-variety, diphone)")
    build.add_argument("--heldout", type=int, default=150,
                       help="test sentences re-spoken by held-out voices (flite, unseen espeak variants)")
    build.add_argument("--dev-fraction", type=float, default=0.02, help="share of sentences in the dev split")
    build.add_argument("--test-fraction", type=float, default=0.02, help="share of sentences in the test split")
    build.add_argument("--seed", type=int, default=0, help="seed of sentence choice, splits and voices")
    build.add_argument("--workers", type=int, default=2, help="parallel synthesis processes")
    build.add_argument("--text-cache", type=Path, default=None, help="where npm text packages are unpacked")
    build.add_argument("--extend", action="store_true",
                       help="top up an existing corpus to new --voices hours (keeps every recording it has)")
    build.add_argument("--splits", nargs="+", default=["train", "dev", "test", "heldout"], metavar="SPLIT",
                       choices=["train", "dev", "test", "heldout"],
                       help="record only these splits now (e.g. dev test heldout first: minutes instead of hours); "
                            "run again without it for the rest")
    build.add_argument("--replan", action="store_true",
                       help="plan anew from the text sources even when the options match the plan shipped in the "
                            "package (tokenspeech/data/corpus_plan.jsonl.gz, which fixes every split)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(run=_run_build)
    stats = sub.add_parser("stats", help="print a built corpus's statistics")
    stats.add_argument("corpus", type=Path)
    stats.set_defaults(run=_run_stats)
    card = sub.add_parser("card", help="print a corpus's statistics as Markdown tables for its data card")
    card.add_argument("corpus", type=Path)
    card.set_defaults(run=_run_card)
