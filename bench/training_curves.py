#!/usr/bin/env python3
"""Training curves of the ASR and TTS runs for docs/asr.md and docs/tts.md, from their train_log.jsonl.

Usage:
  .venv/bin/python bench/training_curves.py asr /work/runs/asr/train_log.jsonl -o docs/img/asr_training.png
  .venv/bin/python bench/training_curves.py tts /work/runs/tts/train_log.jsonl -o docs/img/tts_training.png

ASR: the training loss of every decoder head (smoothed) and, on a second
axis, the greedy-CTC dev WER of each export. TTS: the model phase's training
losses (first-codebook AR, masked stage codebook, later codebooks) and the
dev losses of each evaluation; the aligner phase is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CURVES = {
    "asr": {"losses": ("ctc", "paraformer", "ar", "semiar"), "dev": (("dev_wer_ctc_greedy", "dev WER % (greedy CTC)"),),
            "ylabel": "training loss (nats/token)"},
    "tts": {"losses": ("ar", "stage", "later"),
            "dev": (("dev_ar", "dev AR loss"), ("dev_stage", "dev stage loss"), ("dev_later", "dev later loss")),
            "ylabel": "cross-entropy (nats/code)"},
}


def read_log(path: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if kind == "asr" or r.get("phase") == "tts"]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot(kind: str, log: Path, out: Path, window: int = 10) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, rows = CURVES[kind], read_log(log, kind)
    if not rows:
        raise SystemExit(f"{log} has no {kind} training rows")
    figure, axis = plt.subplots(figsize=(7.5, 3.8))
    for name in spec["losses"]:
        points = np.array([(r["step"], r[name]) for r in rows if name in r and "dev_total" not in r])
        if len(points):
            values = smooth(points[:, 1], window)
            axis.plot(points[len(points) - len(values):, 0], values, label=f"train {name} ({window}-point mean)")
    axis.set_xlabel("step")
    axis.set_ylabel(spec["ylabel"])
    axis.grid(alpha=0.3)
    dev_axis = axis.twinx() if kind == "asr" else axis
    for key, label in spec["dev"]:
        points = np.array([(r["step"], r[key]) for r in rows if r.get(key) is not None])
        if len(points):
            values = points[:, 1] * (100 if kind == "asr" else 1)
            dev_axis.plot(points[:, 0], values, marker="o", markersize=4, linestyle="--", label=label)
    if kind == "asr":
        dev_axis.set_ylabel("dev WER %")
    pairs = [pair for a in dict.fromkeys((axis, dev_axis)) for pair in zip(*a.get_legend_handles_labels())]
    axis.legend(*zip(*pairs), fontsize=8, loc="upper right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(CURVES))
    parser.add_argument("log", type=Path, help="the run's train_log.jsonl")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--window", type=int, default=10, help="points in the moving mean of training losses")
    args = parser.parse_args()
    print(plot(args.kind, args.log, args.out, args.window))


if __name__ == "__main__":
    main()
