#!/usr/bin/env python3
"""Where do our TTS errors come from? Judge WER of dev sentences with parts of the answer given.

Each condition synthesises the same --per-set dev utterances of one voice from
the phonemes a TTS training run cached (RUN/cache: codec codes and the
aligner's durations), so the parts a condition gives are the recording's own:

  pred          the synthesiser as a user runs it: predicted durations, --decoder
  dur           the aligner's durations instead of the predicted ones
  dur+cN        aligner durations and the recording's first N codebooks; the
                masked model fills the rest (N = 1: how good are codebooks 2..K)
  ceilN         the recording's first N codebooks decoded by the codec, nothing
                generated (N = K: the ceiling of any token model)

A condition may carry decoding options after colons: ``cs=2`` (coarse_steps:
codebook 2 unmasked iteratively in 2 passes; ``cs=2.2`` for codebooks 2 and 3),
``fp=5`` (fine passes), ``g=0`` (guidance). Example: ``pred:cs=2``.

Usage:
  .venv/bin/python bench/tts_oracle.py --run /work/runs/tts-s12 --per-set 80
  .venv/bin/python bench/tts_oracle.py --run /work/runs/tts-s12 --conditions pred,pred:cs=2 --decoder semiar

Writes OUT/results.json (every transcript). One thread; the judge is Whisper
base (tokenspeech.eval.judge.WhisperJudge), as in bench/tts.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import aligned_cache_dir, fail, load_or_fail, markdown_table, number, read_split, threads, write_json

DEFAULT_CONDITIONS = "pred,dur,dur+c1,dur+c2,dur+c3,ceil2,ceil3,ceil6"


def parse_condition(text: str, base_options):
    """``NAME[:key=value...]`` -> ``(NAME, SynthesisOptions with the given decoding settings)``."""
    name, *settings = text.split(":")
    values = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in ("cs", "fp", "g") or not value:
            fail(f"condition {text!r}: options are cs=STEPS[.STEPS...], fp=N, g=SCALE")
        values[key] = value
    options = base_options
    if "cs" in values:
        options = replace(options, coarse_steps=tuple(int(s) for s in values["cs"].split(".")))
    if "fp" in values:
        options = replace(options, fine_passes=int(values["fp"]))
    if "g" in values:
        options = replace(options, guidance=float(values["g"]))
    if name in ("pred", "dur") or (name.startswith("dur+c") and name[5:].isdigit()) or (
            name.startswith("ceil") and name[4:].isdigit()):
        return name, options
    fail(f"unknown condition {name!r}: use pred, dur, dur+cN or ceilN")


def condition_tokens(synth, cache, row: int, voice: int, name: str, options) -> np.ndarray:
    """Codec tokens ``[K, F]`` of cached utterance ``row`` under one condition."""
    from tokenspeech.decoding import calls
    from tokenspeech.decoding.masked import MASK
    from tokenspeech.tts.pipeline import STRATEGIES, fill_masked_tokens, sentence_seed

    codes = cache.item_codes(row)
    if name.startswith("ceil"):
        return codes[:int(name[4:])]
    backend = synth.backend
    seed = sentence_seed(options.seed, 0)
    condition = backend.condition(cache.phoneme_ids(row), voice, options.rate,
                                  None if name == "pred" else cache.item_durations(row))
    if name.startswith("dur+c"):
        given = int(name[5:])
        tokens = np.full((1, backend.num_codebooks, condition.frames), MASK, dtype=np.int64)
        tokens[0, :given] = codes[:given, :condition.frames]
        return calls.run(fill_masked_tokens(backend, condition, tokens, options, seed))[0]
    blocks = calls.outputs(STRATEGIES[options.decoder].blocks(backend, condition, options, seed))
    return np.concatenate(list(blocks), axis=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="a `tokenspeech train tts` run folder whose cache/ holds the dev codes and durations")
    parser.add_argument("--model", type=Path, default=None, help="TTS model (default: the shipped one)")
    parser.add_argument("--codec", type=Path, default=None, help="tscodec model (default: the shipped codec)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"), help="corpus with dev.jsonl (texts)")
    parser.add_argument("--per-set", type=int, default=80, help="dev utterances (default 80, the first in the cache)")
    parser.add_argument("--voice", default="joe", help="voice whose dev utterances to use (default joe)")
    parser.add_argument("--decoder", default="nar", help="decoder of the pred and dur conditions (default nar)")
    parser.add_argument("--conditions", default=DEFAULT_CONDITIONS, help=f"comma list (default {DEFAULT_CONDITIONS})")
    parser.add_argument("--seed", type=int, default=1, help="synthesis seed (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tts-oracle"), help="folder for results.json")
    args = parser.parse_args(argv)
    if args.per_set < 1:
        fail("--per-set must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache_dir = aligned_cache_dir(args.run)
    texts = {row.id: row.text for row in read_split(args.corpus, "dev")}
    with threads(1):
        from tokenspeech.eval.judge import WhisperJudge
        from tokenspeech.eval.wer import error_rates
        from tokenspeech.training.tts_data import TokenCache
        from tokenspeech.tts import SynthesisOptions, Synthesizer
        from tokenspeech.tts.pipeline import audio_numpy

        synth = load_or_fail(lambda: Synthesizer.load(args.model, args.codec), "TTS model")
        cache = TokenCache.load(cache_dir / "codes-dev.npz", cache_dir / "durations-dev.npz")
        cached_voices = json.loads((cache_dir / "meta.json").read_text())["voices"]
        if args.voice not in cached_voices or args.voice not in synth.voices:
            fail(f"voice {args.voice!r} must be in the run's voices ({', '.join(cached_voices)}) and the model's")
        if cache.codes.shape[0] < synth.backend.num_codebooks:
            fail(f"the run cached {cache.codes.shape[0]} codebooks; the model makes {synth.backend.num_codebooks}")
        rows = [i for i in range(len(cache)) if int(cache.voice[i]) == cached_voices.index(args.voice)
                and str(cache.ids[i]) in texts][:args.per_set]
        if not rows:
            fail(f"no dev utterances of {args.voice} in both {cache_dir} and {args.corpus}/dev.jsonl")
        base = SynthesisOptions(voice=args.voice, decoder=args.decoder, seed=args.seed)
        conditions = [(text, *parse_condition(text, base)) for text in args.conditions.split(",") if text]
        voice = synth.voices.index(args.voice)
        judge = load_or_fail(lambda: WhisperJudge(threads=1), "judge")
        refs = [texts[str(cache.ids[i])] for i in rows]
        results = []
        for text, name, options in conditions:
            started = time.process_time()
            hyps = []
            for i in rows:
                tokens = condition_tokens(synth, cache, i, voice, name, options)
                hyps.append(judge.transcribe(audio_numpy(synth.codec.decode(tokens[None]))[0, 0]))
            wer = error_rates(refs, hyps).wer * 100
            results.append({"condition": text, "wer_percent": wer, "cpu_seconds": time.process_time() - started,
                            "hypotheses": hyps})
            print(f"{text}: judge WER {wer:.2f} %", flush=True)
    words = sum(len(r.split()) for r in refs)
    print(f"\n{len(rows)} dev utterances of {args.voice}, {words} words (one word = {100 / words:.2f} points)\n")
    print(markdown_table(["condition", "judge WER %"], [[r["condition"], number(r["wer_percent"], ".2f")]
                                                         for r in results]))
    write_json(args.out / "results.json", {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "run": str(args.run),
                                           "model": str(args.model or "(shipped)"), "decoder": args.decoder,
                                           "ids": [str(cache.ids[i]) for i in rows], "references": refs,
                                           "conditions": results})
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
