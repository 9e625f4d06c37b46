#!/usr/bin/env python3
"""Tune Paraformer's position search on dev: the network runs once per clip, the search once per setting.

The search after Paraformer's one pass (decoding/position_lm.py: LM beam, CTC
prefix scores, empty positions) is where its settings live; re-running the
encoder and the parallel decoder for every setting would waste most of the
time. This script keeps each clip's pass (:meth:`AsrRecognizer.paraformer_pass`)
and re-runs only :func:`position_beam_search`, with the recogniser's own
search options changed one field at a time:

  --windows none,4,8,16   PositionBeamOptions.ctc_window (frames of 40 ms around each
                          position's CIF span; none: the whole utterance)
  --max-skips 0,2         PositionBeamOptions.max_skips
  --ctc-weights 0.5,0.7   PositionBeamOptions.ctc_weight
  --lm-weights 0.5,0.8    PositionBeamOptions.lm_weight
  --space-penalties 1,2   PositionBeamOptions.space_penalty
  (each defaults to the recogniser's own setting, asr/engine.py's PARAFORMER_* and
  LM_SETTINGS for the LM's kind)

Every combination is run. Printed per setting: WER, CER, the search's CPU
seconds and its CPU real-time factor (search seconds per audio second), and
how many hypotheses differ from the first setting's. Also printed once: how
CIF's number of positions compares with the reference's character count (the
reason empty positions exist).

Usage:
  .venv/bin/python bench/paraformer_search.py --per-set 150 --windows none,4,8,16 --out /tmp/para-dev
  .venv/bin/python bench/paraformer_search.py --model /tmp/tiny/asr --per-set 3 --windows none,2   # smoke run

Dev only by default: settings are chosen here and then measured once on test
and held-out with bench/asr.py.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import cpu_seconds, fail, load_or_fail, markdown_table, split_list, threads, warn_if_busy, write_json
from asr import TUNING_SETS, SETS, pick_clips

logger = logging.getLogger("bench.paraformer_search")


def _window(text: str) -> int | None:
    if text == "none":
        return None
    if not text.isdigit():
        fail(f"--windows: {text!r} is neither 'none' nor a number of frames")
    return int(text)


def _number(text: str, flag: str, high: float = float("inf")) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:
        fail(f"{flag}: {text!r} is not a number in [0, {high:g}]")
    return value


def _numbers(text: str, flag: str, high: float = float("inf")) -> list[float]:
    return [_number(t.strip(), flag, high) for t in text.split(",") if t.strip()]


def cif_counts(passes, references: list[str]) -> dict[str, float]:
    """How often CIF fired exactly / more / fewer times than the reference has characters."""
    from tokenspeech.text.normalize import normalize_text, transcript_form

    difference = np.array([len(p.logits) - len(transcript_form(normalize_text(text)))
                           for p, text in zip(passes, references)])
    return {"exact": float((difference == 0).mean()), "over": float((difference > 0).mean()),
            "under": float((difference < 0).mean()), "mean": float(difference.mean())}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="ASR model path (default: the shipped model)")
    parser.add_argument("--lm", default=None, help="character LM (default: the shipped one)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--sets", default="dev", help="comma list of " + ", ".join(TUNING_SETS + SETS))
    parser.add_argument("--per-set", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", default="", help="comma list of ctc_window values ('none' or frames)")
    parser.add_argument("--max-skips", default="", help="comma list of max_skips values")
    parser.add_argument("--ctc-weights", default="", help="comma list of ctc_weight values (0-1)")
    parser.add_argument("--lm-weights", default="", help="comma list of lm_weight values (>= 0)")
    parser.add_argument("--space-penalties", default="", help="comma list of space_penalty values (>= 0)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/paraformer-search"))
    args = parser.parse_args(argv)
    if args.per_set < 1:
        fail("--per-set must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    sets = split_list(args.sets, TUNING_SETS + SETS, "--sets")
    windows = [_window(w.strip()) for w in args.windows.split(",") if w.strip()]
    skips = [int(s) if s.strip().isdigit() else fail(f"--max-skips: {s!r} is not a count")
             for s in args.max_skips.split(",") if s.strip()]
    weights = _numbers(args.ctc_weights, "--ctc-weights", 1.0)
    lm_weights = _numbers(args.lm_weights, "--lm-weights")
    penalties = _numbers(args.space_penalties, "--space-penalties")
    with threads(args.threads):
        from tokenspeech.asr.lm import load_lm
        from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer, load_asr_model
        from tokenspeech.decoding.position_lm import position_beam_search
        from tokenspeech.eval.wer import error_rates

        bundle = load_or_fail(lambda: load_asr_model(args.model), "ASR model")
        lm = load_or_fail(lambda: load_lm(args.lm, bundle.vocabulary), "language model")
        if lm is None:
            fail("the position search needs a language model (--lm none leaves nothing to tune)")
        recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="paraformer"), lm)
        foreign = warn_if_busy(args.threads)
        clips = pick_clips(args.corpus, sets, args.per_set, args.seed)
        audio_seconds = sum(c.seconds for c in clips)
        logger.info("%d clips (%s), %.1f s of audio; running the network once", len(clips), ", ".join(sets),
                    audio_seconds)
        started = cpu_seconds()
        passes = []
        for clip in clips:
            mel, lengths = recognizer.features([clip.wav])
            encoded = recognizer.backend.encode(mel, lengths, 0, recognizer.options.left_chunks)
            passes.extend(recognizer.paraformer_pass(encoded))
        network_seconds = cpu_seconds() - started
        references = [c.text for c in clips]
        base = recognizer.paraformer_search_options()
        rows, first_hypotheses = [], None
        settings = itertools.product(windows or [base.ctc_window], skips or [base.max_skips],
                                     weights or [base.ctc_weight], lm_weights or [base.lm_weight],
                                     penalties or [base.space_penalty])
        for window, max_skips, ctc_weight, lm_weight, penalty in settings:
            options = replace(base, ctc_window=window, max_skips=max_skips, ctc_weight=ctc_weight,
                              lm_weight=lm_weight, space_penalty=penalty)
            started = cpu_seconds()
            hypotheses = []
            for done in passes:
                scorer = done.ctc_scorer(recognizer.vocabulary) if options.ctc_weight > 0 else None
                path = position_beam_search(done.logits, lm, options, scorer, done.spans)
                hypotheses.append(" ".join(recognizer.vocabulary.decode(path.tokens).split()))
            seconds = cpu_seconds() - started
            rates = error_rates(references, hypotheses)
            first_hypotheses = first_hypotheses or hypotheses
            changed = sum(a != b for a, b in zip(hypotheses, first_hypotheses))
            rows.append({"ctc_window": window, "max_skips": max_skips, "ctc_weight": ctc_weight,
                         "lm_weight": lm_weight, "space_penalty": penalty, "wer": rates.wer, "cer": rates.cer,
                         "search_cpu_seconds": seconds, "search_cpu_rtf": seconds / audio_seconds,
                         "changed_vs_first": changed, "hypotheses": hypotheses})
            logger.info("window %s, skips %d, ctc weight %s, lm weight %s, space penalty %s: WER %.2f %%, "
                        "CER %.2f %%, search %.1f CPU s (RTF %.4f)", window, max_skips, ctc_weight, lm_weight,
                        penalty, 100 * rates.wer, 100 * rates.cer, seconds, seconds / audio_seconds)
    counts = cif_counts(passes, references)
    table = markdown_table(
        ["ctc_window", "max_skips", "ctc_weight", "lm_weight", "space_penalty", "WER %", "CER %", "search CPU s",
         "search CPU RTF", "hyps changed"],
        [[str(r["ctc_window"]), str(r["max_skips"]), str(r["ctc_weight"]), str(r["lm_weight"]),
          str(r["space_penalty"]), f"{100 * r['wer']:.2f}",
          f"{100 * r['cer']:.2f}",
          f"{r['search_cpu_seconds']:.1f}", f"{r['search_cpu_rtf']:.4f}", str(r["changed_vs_first"])] for r in rows])
    print(f"\n{len(clips)} clips ({', '.join(sets)}), {audio_seconds:.0f} s of audio, {args.threads} thread(s); "
          f"network (encoder + CIF + parallel decoder) CPU RTF {network_seconds / audio_seconds:.4f}\n")
    print(table)
    print(f"\nCIF positions vs reference characters: exact {100 * counts['exact']:.0f} %, more "
          f"{100 * counts['over']:.0f} %, fewer {100 * counts['under']:.0f} % (mean {counts['mean']:+.2f})")
    write_json(args.out / "results.json", {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "model": str(args.model or "(shipped)"),
        "lm": str(args.lm or "(shipped)"), "threads": args.threads, "seed": args.seed, "sets": sets,
        "foreign_cores_busy_at_start": foreign, "audio_seconds": audio_seconds,
        "network_cpu_seconds": network_seconds, "cif_counts": counts,
        "clips": [{"id": c.id, "set": c.set, "voice": c.voice, "text": c.text} for c in clips], "settings": rows})
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
