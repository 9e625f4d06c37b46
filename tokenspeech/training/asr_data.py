"""ASR training data: manifest rows, length-bucketed batches, padded feature batches.

Axes: B batch, S samples, M mel bands, F feature frames, N characters,
P phonemes.

Manifests are the corpus JSONL files (fields ``id, split, transcript,
phonemes, path, duration``; ``path`` relative to the manifest's folder).
Batches hold utterances of similar duration so padding is small, and are
capped by padded audio seconds (``max_batch_seconds``). The batch order of an
epoch is a pure function of (seed, epoch), so resuming at (epoch, index)
replays the same data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tokenspeech.audio import load_audio
from tokenspeech.errors import AudioError, ConfigError
from tokenspeech.models.frontend import LogMel
from tokenspeech.text.vocab import Vocabulary
from tokenspeech.training.augment import AugmentOptions, WaveAugmenter, spec_augment, vtlp_filterbanks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrExample:
    id: str
    path: Path
    transcript: str
    phonemes: str
    duration: float


def corpus_manifest(corpus: Path, split: str) -> Path | None:
    """``corpus/<split>.jsonl``, else ``corpus/done.jsonl`` (a corpus still being built), else None."""
    for candidate in (corpus / f"{split}.jsonl", corpus / "done.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def read_manifest(path: str | Path, max_seconds: float | None = None, split: str | None = None) -> list[AsrExample]:
    """Rows of a corpus manifest (audio paths made absolute).

    Rows longer than ``max_seconds`` or (when given) of another ``split`` are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest not found: {path}")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if (max_seconds is not None and row["duration"] > max_seconds) or \
                (split is not None and row.get("split", split) != split):
            continue
        rows.append(AsrExample(row["id"], path.parent / row["path"], row["transcript"],
                               row.get("phonemes", ""), float(row["duration"])))
    return rows


def bucket_batches(durations: list[float], max_batch_seconds: float, rng: np.random.Generator) -> list[list[int]]:
    """Indices grouped by similar duration, each batch's padded length x size <= ``max_batch_seconds``.

    Durations are jittered by up to 10 % before sorting so batches differ
    between epochs; the batch order is shuffled.
    """
    jitter = np.asarray(durations) * rng.uniform(0.95, 1.05, len(durations))
    order = np.argsort(jitter, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order.tolist():
        longest = max(durations[i] for i in current + [index])
        if current and longest * (len(current) + 1) > max_batch_seconds:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass
class AsrBatch:
    """Padded features and targets (targets padded with 0)."""

    mel: Tensor  # [B, M, F]
    mel_lengths: Tensor  # [B]
    chars: Tensor  # [B, N]
    char_lengths: Tensor  # [B]
    phonemes: Tensor | None  # [B, P]
    phoneme_lengths: Tensor | None  # [B]
    audio_seconds: float


def _pad(sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(s) for s in sequences])
    out = torch.zeros(len(sequences), max(1, int(lengths.max())), dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out, lengths


class BatchMaker:
    """Loads, augments and featurises a list of examples into an :class:`AsrBatch`."""

    def __init__(self, frontend: LogMel, vocabulary: Vocabulary, phonemes: Vocabulary | None,
                 augment: AugmentOptions) -> None:
        self.frontend = frontend
        self.vocabulary = vocabulary
        self.phonemes = phonemes
        self.augment = augment
        self.waves = WaveAugmenter(augment, frontend.config.sample_rate)

    def load(self, examples: list[AsrExample]) -> list[tuple[AsrExample, np.ndarray]]:
        loaded = []
        for example in examples:
            try:
                loaded.append((example, load_audio(example.path, self.frontend.config.sample_rate)[0]))
            except AudioError as error:
                logger.warning("skipping %s: %s", example.id, error)
        return loaded

    def _vtlp(self, count: int, rng: np.random.Generator) -> torch.Tensor | None:
        """Per-utterance warped filterbanks, or None when no utterance of the batch is warped."""
        o = self.augment
        alphas = [float(rng.uniform(*o.vtlp_alpha)) if rng.random() < o.vtlp_prob else 1.0 for _ in range(count)]
        return vtlp_filterbanks(self.frontend.config, alphas) if any(a != 1.0 for a in alphas) else None

    def make(self, examples: list[AsrExample], seed: int, train: bool = True) -> AsrBatch | None:
        """The batch for ``examples``; augmentations drawn from ``seed``. None when nothing loads."""
        loaded = self.load(examples)
        if not loaded:
            return None
        rng = np.random.default_rng(seed)
        others = [wav for _, wav in loaded]
        waves = [self.waves(wav, rng, others) if train else wav for _, wav in loaded]
        padded = np.zeros((len(waves), max(len(w) for w in waves)), dtype=np.float32)
        for row, wav in enumerate(waves):
            padded[row, : len(wav)] = wav
        with torch.no_grad():
            mel = self.frontend(torch.from_numpy(padded), self._vtlp(len(waves), rng) if train else None)
        mel_lengths = torch.tensor([self.frontend.config.num_frames(len(w)) for w in waves])
        if train:
            mel = spec_augment(mel, mel_lengths, self.augment, torch.Generator().manual_seed(seed))
        chars, char_lengths = _pad([self.vocabulary.encode(e.transcript) for e, _ in loaded])
        phonemes = phoneme_lengths = None
        if self.phonemes is not None:
            phonemes, phoneme_lengths = _pad([self.phonemes.encode(e.phonemes) for e, _ in loaded])
        seconds = sum(len(w) for w in waves) / self.frontend.config.sample_rate
        return AsrBatch(mel, mel_lengths, chars, char_lengths, phonemes, phoneme_lengths, seconds)


def feature_statistics(maker: BatchMaker, examples: list[AsrExample]) -> tuple[Tensor, Tensor]:
    """Per-band mean and standard deviation ``[M]`` of log-mel over ``examples`` (no augmentation)."""
    total, total_sq, count = None, None, 0
    for start in range(0, len(examples), 16):
        batch = maker.make(examples[start:start + 16], seed=0, train=False)
        if batch is None:
            continue
        for row, length in enumerate(batch.mel_lengths.tolist()):
            frames = batch.mel[row, :, :length].double()
            total = frames.sum(1) if total is None else total + frames.sum(1)
            total_sq = (frames ** 2).sum(1) if total_sq is None else total_sq + (frames ** 2).sum(1)
            count += length
    if total is None or count == 0:
        raise ConfigError("no readable training audio to compute feature statistics from")
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean ** 2, min=1e-4))
    return mean.float(), std.float()
