#!/usr/bin/env python3
"""Figures for docs/codec.md: the training curve and a spectrogram comparison.

Usage:
  .venv/bin/python bench/codec_plots.py --bench-out /tmp/bench-codec --log docs/tscodec_train_log.jsonl --out docs/img

- ``codec_training.png``: training mel loss (smoothed) and the validation mel
  distance at 1.5 / 3 / 6 kbps against the step, from the run's train_log.jsonl.
- ``codec_spectrograms.png``: log-mel spectrograms of one held-out clip as
  original / tscodec 1.5 kbps / Opus 6 kbps / Codec2 1600, read from the
  decoded audio that bench/codec.py wrote (already delay-aligned).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tokenspeech.audio import load_audio
from tokenspeech.features import MelConfig, log_mel_numpy

PANELS = (("original", "original"), ("tscodec-1.5k", "tscodec 1.5 kbps"), ("opus-6k", "Opus 6 kbps"),
          ("codec2-1600", "Codec2 1.6 kbps"))


def plot_training(log: Path, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["mel"]) for r in rows if "mel" in r]
    figure, axis = plt.subplots(figsize=(7, 3.6))
    steps, mel = np.array(train).T
    window = 8
    smooth = np.convolve(mel, np.ones(window) / window, mode="valid")
    axis.plot(steps[window - 1:], smooth, label="training mel loss (8-point mean)", color="0.6")
    for codebooks, kbps in ((6, 1.5), (12, 3), (24, 6)):
        points = [(r["step"], r[f"val_mel@{codebooks}"]) for r in rows if f"val_mel@{codebooks}" in r]
        if points:
            x, y = np.array(points).T
            axis.plot(x, y, marker="o", markersize=3, label=f"validation mel @ {kbps:g} kbps")
    stages: dict[str, int] = {}
    for r in rows:
        if "stage" in r:
            stages.setdefault(r["stage"], r["step"])
    for stage, first in stages.items():  # a later stage (e.g. a decoder fine-tune) continues the step count
        axis.axvline(first, color="0.3", linestyle="--", linewidth=0.8)
        axis.text(first, axis.get_ylim()[1] * 0.97, f" {stage}", fontsize=7, va="top")
    axis.set_xlabel("step (batch 8 x 2 s)")
    axis.set_ylabel("log-mel L1")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = out / "codec_training.png"
    figure.savefig(path, dpi=120)
    return path


def plot_spectrograms(bench_out: Path, out: Path, clip: str | None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = bench_out / "decoded" / "original" / "heldout"
    if not folder.is_dir():
        folder = bench_out / "decoded" / "original" / "test"
    name = clip or sorted(p.name for p in folder.glob("*.wav"))[0]
    config = MelConfig()
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(8, 2.0 * len(PANELS)), sharex=True)
    for axis, (system, title) in zip(axes, PANELS):
        wav, _ = load_audio(bench_out / "decoded" / system / folder.name / name)
        mel = log_mel_numpy(wav, config)
        axis.imshow(mel, origin="lower", aspect="auto", vmin=mel.max() - 11, vmax=mel.max(),
                    extent=(0, mel.shape[1] * config.hop_length / config.sample_rate, 0, config.n_mels))
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("mel band")
    axes[-1].set_xlabel("seconds")
    figure.tight_layout()
    path = out / "codec_spectrograms.png"
    figure.savefig(path, dpi=110)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-out", type=Path, required=True, help="--out folder of bench/codec.py")
    parser.add_argument("--log", type=Path, required=True, help="train_log.jsonl of the codec run")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--clip", default=None, help="file name of the clip to show (default: the first)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(plot_training(args.log, args.out))
    print(plot_spectrograms(args.bench_out, args.out, args.clip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
