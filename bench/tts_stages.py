#!/usr/bin/env python3
"""How well does each TTS model predict codebook k from codebooks 1..k-1? Dev cross-entropy per stage.

For each model and each codebook k, the first --utterances dev utterances of a
TTS training run's cache (RUN/cache: codec codes and aligner durations) go
through the masked codec transformer with codebooks < k given, part of
codebook k masked and the later codebooks hidden, as in training's stage k
(full attention, no guidance drop). Printed: cross-entropy (nats) and accuracy
at the masked positions of codebook k. The masks depend only on --seed and k,
so every model sees the same inputs; over tens of thousands of positions a
difference of 0.01 nats is real, where a judge WER difference on 80 sentences
is often noise (bench/tts_oracle.py).

Usage:
  .venv/bin/python bench/tts_stages.py --run /work/runs/tts-s15 --models tokenspeech/assets/tts,/work/runs/tts-s15/tts

Writes OUT/results.json. Needs the models to share the run's phoneme vocabulary
and voices (a model trained or continued on that run's cache).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import aligned_cache_dir, fail, load_or_fail, markdown_table, threads, write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="a `tokenspeech train tts` run folder whose cache/ holds the dev codes and durations")
    parser.add_argument("--models", required=True, help="comma list of TTS models (.safetensors + .json card)")
    parser.add_argument("--utterances", type=int, default=64, help="first dev utterances of the cache (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tts-stages"), help="folder for results.json")
    args = parser.parse_args(argv)
    if args.utterances < 1:
        fail("--utterances must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache_dir = aligned_cache_dir(args.run)
    meta = json.loads((cache_dir / "meta.json").read_text())
    with threads(args.threads):
        from tokenspeech.training.tts import stage_losses
        from tokenspeech.training.tts_data import TokenCache
        from tokenspeech.tts.model_io import load_tts_model

        cache = TokenCache.load(cache_dir / "codes-dev.npz", cache_dir / "durations-dev.npz")
        results = {}
        for model_path in [m for m in args.models.split(",") if m]:
            bundle = load_or_fail(lambda: load_tts_model(model_path), f"TTS model {model_path}")
            if list(bundle.phonemes.symbols) != list(meta["vocabulary"]) or list(bundle.voices) != list(meta["voices"]):
                fail(f"{model_path} has other phonemes or voices than {cache_dir}/meta.json: score it on the cache "
                     "of a run it was trained on")
            if cache.codes.shape[0] < bundle.model.config.num_codebooks:
                fail(f"the run cached {cache.codes.shape[0]} codebooks; {model_path} models "
                     f"{bundle.model.config.num_codebooks}")
            results[model_path] = stage_losses(bundle.model, cache, args.utterances, args.seed)
            print(f"{model_path}: " + ", ".join(f"c{r['codebook']} {r['ce']:.4f}" for r in results[model_path]),
                  flush=True)
    names = list(results)
    rows = []
    for k in range(len(results[names[0]])):
        row = [str(k + 1)]
        for name in names:
            r = results[name][k]
            row.append(f"{r['ce']:.4f} / {100 * r['accuracy']:.1f} %")
        rows.append(row)
    positions = sum(r["positions"] for r in results[names[0]])
    print(f"\n{min(args.utterances, len(cache))} dev utterances, {positions} masked positions over all stages\n")
    print(markdown_table(["codebook k (given 1..k-1)", *[f"{n}: CE / accuracy" for n in names]], rows))
    write_json(args.out / "results.json", {"run": str(args.run), "utterances": args.utterances, "seed": args.seed,
                                           "models": results})
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
