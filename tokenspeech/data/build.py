"""Synthesise a planned corpus: parallel, resumable, with a progress bar.

Layout of a corpus folder::

    DIR/plan.jsonl          every planned utterance (written once, reused on resume)
    DIR/done.jsonl          one line per finished recording, appended as they finish
    DIR/audio/VOICE/XX/ID.flac
    DIR/{train,dev,test,heldout}.jsonl   manifests, written when all is done
    DIR/stats.json          hours per voice and split, counts, vocabulary size

An interrupted build is resumed by running the same command again: finished
recordings (in ``done.jsonl`` with their file present) are skipped. Each
worker process keeps its own synthesizers and runs single-threaded.

A new corpus with the default options starts from the plan shipped in the
package (``corpus_plan.jsonl.gz``, text and voices only) instead of planning
anew: a plan depends on every sentence the text sources give and on the
normaliser, so a later release of either would otherwise deal other sentences
to other splits, and evaluation sets would change (or take in sentences a
shipped model trained on) from machine to machine.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenspeech.data.corpus import (Utterance, estimated_seconds, is_reserved, plan_corpus, plan_heldout,
                                     reserved_sentences, seen_in_training, split_of, unique_speakable)
from tokenspeech.data.sources import default_sources, iter_sentences
from tokenspeech.data.voices import HELDOUT_VOICES, VOICE_FAMILIES, VoiceSpec, make_synthesizer
from tokenspeech.text.normalize import transcript_form

LOG = logging.getLogger(__name__)
SAMPLE_RATE = 16000
MANIFEST_SPLITS = ("train", "dev", "test", "heldout")
SHIPPED_PLAN = Path(__file__).with_name("corpus_plan.jsonl.gz")


@dataclass(frozen=True)
class BuildOptions:
    """What to build: hours per voice family, held-out size, seed, workers."""

    out: Path
    hours: tuple[tuple[str, float], ...] = (("joe", 21.0), ("espeak-us", 3.0), ("espeak-gb-f", 3.0),
                                            ("espeak-variety", 5.0), ("diphone", 3.0))
    heldout: int = 150
    dev_fraction: float = 0.02
    test_fraction: float = 0.02
    seed: int = 0
    workers: int = 2
    text_cache: Path | None = None
    progress: bool = True
    extend: bool = False  # top up an existing plan to new --voices hours instead of refusing
    splits: tuple[str, ...] = MANIFEST_SPLITS  # record only these now (a later run records the rest)
    shipped_plan: Path | None = SHIPPED_PLAN  # a new corpus starts from it when the options match; None: plan anew

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not (0 <= self.dev_fraction and 0 <= self.test_fraction and self.dev_fraction + self.test_fraction < 1):
            raise ValueError("dev and test fractions must be >= 0 and add up to less than 1")
        if any(h < 0 for _, h in self.hours):
            raise ValueError("hours must not be negative")
        if not self.splits or set(self.splits) - set(MANIFEST_SPLITS):
            raise ValueError(f"splits must be among {', '.join(MANIFEST_SPLITS)}, got {list(self.splits)}")
        unknown = {name for name, _ in self.hours} - set(VOICE_FAMILIES)
        if unknown:
            raise ValueError(f"unknown voice families {sorted(unknown)}; choose from {sorted(VOICE_FAMILIES)}")


def _specs() -> dict[str, VoiceSpec]:
    specs = {s.name: s for family in VOICE_FAMILIES.values() for s in family}
    specs.update({s.name: s for s in HELDOUT_VOICES})
    return specs


def audio_relpath(utterance: Utterance) -> str:
    voice_dir = utterance.voice.replace(":", "_").replace("+", "_")
    return f"audio/{voice_dir}/{utterance.id[:2]}/{utterance.id}.flac"


# -- worker side ----------------------------------------------------------
_WORKER: dict = {}


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    _WORKER.clear()


def _synthesize_one(args: tuple[dict, str]) -> dict:
    """Record one utterance; returns its manifest row, or ``{"id", "error"}``."""
    from tokenspeech.audio import normalize_loudness, resample, save_audio, trim_silence
    from tokenspeech.text.g2p import EspeakPhonemizer

    row, out_dir = args
    utterance = Utterance(**row)
    try:
        synth = _WORKER.get(utterance.voice)
        if synth is None:
            synth = _WORKER[utterance.voice] = make_synthesizer(_specs()[utterance.voice])
        wav, rate = synth.synthesize(utterance.spoken, utterance.rate, utterance.pitch)
        wav = resample(trim_silence(wav, rate), rate, SAMPLE_RATE)
        wav = normalize_loudness(wav, -23.0)
        relpath = audio_relpath(utterance)
        save_audio(Path(out_dir) / relpath, wav, SAMPLE_RATE)
        phonemes = EspeakPhonemizer("en-us").phonemize(utterance.spoken)
    except Exception as error:  # one bad sentence must not stop the build
        return {"id": utterance.id, "error": f"{type(error).__name__}: {error}"}
    result = utterance.to_json()
    result.update(path=relpath, duration=round(len(wav) / SAMPLE_RATE, 3), sample_rate=SAMPLE_RATE,
                  phonemes=phonemes)
    return result


# -- main side ------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: redo that recording
                    continue
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


# Options that shape a plan, with the defaults of plans saved before they existed.
_PLAN_META_DEFAULTS = {"seed": 0, "hours": None, "heldout": 150, "dev_fraction": 0.02, "test_fraction": 0.02}


def _plan_meta(options: BuildOptions) -> dict:
    return {"seed": options.seed, "hours": [list(h) for h in options.hours], "heldout": options.heldout,
            "dev_fraction": options.dev_fraction, "test_fraction": options.test_fraction}


def _read_sentences(options: BuildOptions) -> list:
    cache = options.text_cache or options.out / "text-sources"
    LOG.info("reading text sources and normalising sentences")
    sentences = unique_speakable(iter_sentences(default_sources(cache)))
    LOG.info("%d speakable unique sentences", len(sentences))
    return sentences


def family_of(voice: str) -> str | None:
    """The voice family (key of ``VOICE_FAMILIES``) a voice name belongs to; None for held-out voices."""
    for family, specs in VOICE_FAMILIES.items():
        if any(spec.name == voice for spec in specs):
            return family
    return None


def planned_hours(plan: list[Utterance], done: dict[str, dict]) -> dict[str, float]:
    """Hours per family: measured for finished recordings, estimated for the rest."""
    hours: dict[str, float] = {}
    for utterance in plan:
        family = family_of(utterance.voice)
        if family is None or utterance.split == "heldout":
            continue
        row = done.get(utterance.id)
        seconds = row["duration"] if row else estimated_seconds(utterance.spoken, utterance.rate)
        hours[family] = hours.get(family, 0.0) + seconds / 3600
    return hours


def extend_plan(plan: list[Utterance], meta: dict, options: BuildOptions) -> tuple[list[Utterance], dict]:
    """Top a planned corpus up to ``options.hours`` with sentences it does not use yet.

    Hours already there are measured (finished recordings) or estimated (the
    rest), so extending with the original hours fills what the estimate missed.

    Existing utterances are kept as they are (same ids, voices, splits); the
    new ones come from a fresh shuffle (seed + generation) of the unused
    sentences, so a corpus grows without re-recording anything.

    New utterances are all training data, drawn only from sentences the
    corpus seed puts in the train split and that no evaluation row speaks
    (:func:`~tokenspeech.data.corpus.reserved_sentences`: stored splits do not
    all follow the rule): dev, test and held-out stay exactly as they were, so
    a model measured before and after an extension is measured on the same
    clips, and none of their sentences becomes training data.
    """
    done = {r["id"]: r for r in _read_jsonl(options.out / "done.jsonl") if "error" not in r}
    have = planned_hours(plan, done)
    missing = {family: round(target - have.get(family, 0.0), 4) for family, target in options.hours
               if target - have.get(family, 0.0) > 0}
    generation = int(meta.get("extensions", 0)) + 1
    used = {u.transcript for u in plan} | {u.text for u in plan}  # also under today's reading of the text
    reserved = reserved_sentences(plan)
    candidates = _read_sentences(options)
    if meta.get("sentences_available", len(candidates)) != len(candidates):
        LOG.warning("the text sources now give %d speakable sentences, the plan was made from %d: the "
                    "normaliser or the sources changed; sentences the plan already speaks are skipped in "
                    "every reading of them", len(candidates), meta["sentences_available"])
    unused = []
    for sentence, spoken in candidates:
        transcript = transcript_form(spoken)
        fresh = transcript not in used and sentence.text not in used
        if fresh and not is_reserved(sentence.text, transcript, reserved) and split_of(
                transcript, options.seed, options.dev_fraction, options.test_fraction) == "train":
            unused.append((sentence, spoken))
    extra = plan_corpus(unused, missing, options.seed + 1000 * generation, 0.0, 0.0) if missing else []
    LOG.info("extending the plan by %d utterances for %s hours", len(extra), missing)
    meta = dict(meta, hours=[list(h) for h in options.hours], extensions=generation)
    return plan + extra, meta


def load_or_make_plan(options: BuildOptions) -> list[Utterance]:
    """The saved plan of ``options.out`` (extended if asked), or a new one from the text sources."""
    plan_path = options.out / "plan.jsonl"
    saved = _read_jsonl(plan_path)
    if saved:
        meta, plan = saved[0], [Utterance(**row) for row in saved[1:]]
        wanted = _plan_meta(options)
        differs = [key for key, default in _PLAN_META_DEFAULTS.items() if meta.get(key, default) != wanted[key]]
        if options.extend and differs in ([], ["hours"]):
            plan, meta = extend_plan(plan, meta, options)
            _write_jsonl(plan_path, [meta] + [u.to_json() for u in plan])
        elif differs:
            planned = {key: meta.get(key, default) for key, default in _PLAN_META_DEFAULTS.items()}
            raise ValueError(f"{options.out} was planned with {planned}; use the same options to resume, "
                             "--extend with new --voices hours to top it up, or a new --out folder")
        return plan
    options.out.mkdir(parents=True, exist_ok=True)
    shipped = _read_jsonl(options.shipped_plan) if options.shipped_plan else []
    if shipped and all(shipped[0].get(key, default) == _plan_meta(options)[key]
                       for key, default in _PLAN_META_DEFAULTS.items()):
        LOG.info("starting from the shipped plan %s (%d utterances)", options.shipped_plan, len(shipped) - 1)
        _write_jsonl(plan_path, shipped)
        return [Utterance(**row) for row in shipped[1:]]
    sentences = _read_sentences(options)
    plan = plan_corpus(sentences, dict(options.hours), options.seed, options.dev_fraction, options.test_fraction,
                       not_for_evaluation=seen_in_training())
    plan += plan_heldout(plan, options.heldout, options.seed)
    meta = dict(_plan_meta(options), sentences_available=len(sentences))
    _write_jsonl(plan_path, [meta] + [u.to_json() for u in plan])
    return plan


def write_plan(plan_path: Path, out: Path) -> None:
    """Copy a corpus's ``plan.jsonl`` to ``out`` (gzip when it ends in .gz), e.g. to ship it."""
    rows = _read_jsonl(plan_path)
    if not rows:
        raise ValueError(f"{plan_path} holds no plan")
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    # mtime 0: the same plan gives the same bytes, so git sees no change when nothing changed
    out.write_bytes(gzip.compress(text, mtime=0) if out.suffix == ".gz" else text)


def synthesize_plan(plan: list[Utterance], out: Path, workers: int, progress: bool = True,
                    splits: tuple[str, ...] = MANIFEST_SPLITS) -> dict[str, dict]:
    """Record every utterance of ``splits`` not yet done; returns all finished rows by id."""
    from tqdm import tqdm

    done_path = out / "done.jsonl"
    done = {r["id"]: r for r in _read_jsonl(done_path) if "error" not in r and (out / r["path"]).exists()}
    todo = [u for u in plan if u.id not in done and u.split in splits]
    LOG.info("%d recordings done, %d to go", len(done), len(todo))
    if not todo:
        return done
    failures = 0
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init) as pool, done_path.open("a", encoding="utf-8") as log:
        results = pool.imap_unordered(_synthesize_one, [(u.to_json(), str(out)) for u in todo], chunksize=4)
        for row in tqdm(results, total=len(todo), disable=not progress, unit="utt", desc="synthesising"):
            if "error" in row:
                failures += 1
                LOG.warning("%s failed: %s", row["id"], row["error"])
                continue
            log.write(json.dumps(row, ensure_ascii=False) + "\n")
            log.flush()
            done[row["id"]] = row
    if failures:
        LOG.warning("%d recordings failed; run the build again to retry them", failures)
    return done


def corpus_stats(rows: list[dict]) -> dict:
    """Hours per voice and split, sentences per split, sources with licences, vocabulary sizes."""
    hours: dict[str, dict[str, float]] = {}
    utterances: dict[str, int] = {}
    sentences: dict[str, set[str]] = {}
    sources: dict[str, dict] = {}
    phonemes: set[str] = set()
    words: set[str] = set()
    for row in rows:
        by_split = hours.setdefault(row["voice"], {})
        by_split[row["split"]] = by_split.get(row["split"], 0.0) + row["duration"] / 3600
        utterances[row["split"]] = utterances.get(row["split"], 0) + 1
        sentences.setdefault(row["split"], set()).add(row["transcript"])
        source = sources.setdefault(row["source"], {"licence": row["licence"], "utterances": 0, "hours": 0.0})
        source["utterances"] += 1
        source["hours"] += row["duration"] / 3600
        phonemes.update(row["phonemes"])
        words.update(row["transcript"].split())
    return {
        "hours_by_voice": {v: {s: round(h, 3) for s, h in sorted(d.items())} for v, d in sorted(hours.items())},
        "hours_total": round(sum(sum(d.values()) for d in hours.values()), 3),
        "utterances_by_split": dict(sorted(utterances.items())),
        "sentences_by_split": {s: len(t) for s, t in sorted(sentences.items())},
        "sources": {name: dict(info, hours=round(info["hours"], 3)) for name, info in sorted(sources.items())},
        "phoneme_symbols": len(phonemes),
        "word_types": len(words),
    }


def write_manifests(plan: list[Utterance], done: dict[str, dict], out: Path) -> dict:
    """Write one manifest per split (in plan order) and ``stats.json``; returns the stats."""
    rows = [done[u.id] for u in plan if u.id in done]
    for split in MANIFEST_SPLITS:
        _write_jsonl(out / f"{split}.jsonl", (r for r in rows if r["split"] == split))
    stats = corpus_stats(rows)
    stats["planned"] = len(plan)
    stats["finished"] = len(rows)
    unfinished: dict[str, int] = {}
    for utterance in plan:
        if utterance.id not in done:
            unfinished[utterance.split] = unfinished.get(utterance.split, 0) + 1
    stats["unfinished_by_split"] = dict(sorted(unfinished.items()))
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def build_corpus(options: BuildOptions) -> dict:
    """Plan (or reload the plan), synthesise what is missing, write manifests."""
    plan = load_or_make_plan(options)
    done = synthesize_plan(plan, options.out, options.workers, options.progress, options.splits)
    return write_manifests(plan, done, options.out)
