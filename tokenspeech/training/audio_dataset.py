"""Fixed-length random crops of corpus audio, deterministic given a seed and a step.

Listings are JSONL files whose rows have ``path`` (relative to the listing's
folder), ``duration`` (seconds) and ``sample_rate``; ``split`` is optional.
Both a finished corpus' manifests (``train.jsonl``) and the builder's running
``done.jsonl`` qualify. Rows with an ``error`` key, other sample rates or
missing files are skipped (and counted in the log).

:class:`CropSampler` makes batch ``n`` a pure function of ``(seed, n)``, so a
resumed training run sees exactly the batches it would have seen, with no
sampler state to save.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tokenspeech.errors import ConfigError

logger = logging.getLogger(__name__)

LISTING_NAMES = ("{split}.jsonl", "done.jsonl")


@dataclass(frozen=True)
class AudioClip:
    """One recording: an absolute path and its duration in seconds."""

    path: Path
    duration: float


def find_listing(corpus: Path, split: str = "train") -> Path:
    """The listing for ``split`` in a corpus folder (``<split>.jsonl``, else ``done.jsonl``), or the file itself."""
    corpus = Path(corpus)
    if corpus.is_file():
        return corpus
    for pattern in LISTING_NAMES:
        candidate = corpus / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{corpus}: no {split}.jsonl or done.jsonl listing found; pass a corpus folder built by "
                      "`tokenspeech data build` or a JSONL file with path/duration rows")


def read_listing(listing: Path, split: str | None = "train", sample_rate: int = 16000,
                 min_seconds: float = 0.5) -> list[AudioClip]:
    """Clips of ``split`` (``None``: every split) from a JSONL listing; see the module docstring."""
    listing = Path(listing)
    clips, skipped = [], 0
    for line in listing.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:  # a line still being written by the corpus builder
            row = None
        if not row or "error" in row or "path" not in row:
            continue
        if split is not None and row.get("split", split) != split:
            continue
        path = listing.parent / row["path"]
        duration = float(row.get("duration", 0.0))
        if row.get("sample_rate", sample_rate) != sample_rate or duration < min_seconds or not path.is_file():
            skipped += 1
            continue
        clips.append(AudioClip(path, duration))
    if skipped:
        logger.info("%s: skipped %d rows (other sample rate, too short or file missing)", listing, skipped)
    if not clips:
        raise ConfigError(f"{listing}: no usable {split or 'any'} recordings at {sample_rate} Hz")
    return clips


class CropSampler:
    """Batches of random crops ``[B, 1, crop_samples]`` float32.

    Items are drawn uniformly over clips; the crop start is uniform within
    the clip (clips shorter than the crop are zero-padded at the end). A
    random gain in ``gain_db`` is applied, then the crop is scaled down if it
    would clip.
    """

    def __init__(self, clips: list[AudioClip], crop_samples: int, batch_size: int, seed: int,
                 sample_rate: int = 16000, gain_db: tuple[float, float] = (-6.0, 0.0)) -> None:
        if not clips:
            raise ConfigError("CropSampler needs at least one clip")
        if crop_samples <= 0 or batch_size <= 0:
            raise ConfigError(f"crop_samples and batch_size must be > 0, got {crop_samples}, {batch_size}")
        self.clips = clips
        self.crop_samples = crop_samples
        self.batch_size = batch_size
        self.seed = seed
        self.sample_rate = sample_rate
        self.gain_db = gain_db

    def _crop(self, clip: AudioClip, rng: random.Random) -> np.ndarray:
        total = int(clip.duration * self.sample_rate)
        start = rng.randint(0, max(0, total - self.crop_samples))
        gain = 10 ** (rng.uniform(*self.gain_db) / 20)
        data, _ = sf.read(str(clip.path), start=start, frames=self.crop_samples, dtype="float32", always_2d=True)
        wav = np.zeros(self.crop_samples, dtype=np.float32)
        mono = data.mean(axis=1)
        wav[:mono.shape[0]] = mono * gain
        peak = float(np.abs(wav).max(initial=0.0))
        return wav / peak * 0.99 if peak > 0.99 else wav

    def batch(self, step: int) -> torch.Tensor:
        """Batch number ``step`` ``[B, 1, crop_samples]``; the same for the same ``(seed, step)``."""
        rng = random.Random(f"{self.seed}:{step}")
        crops = [self._crop(self.clips[rng.randrange(len(self.clips))], rng) for _ in range(self.batch_size)]
        return torch.from_numpy(np.stack(crops)).unsqueeze(1)
