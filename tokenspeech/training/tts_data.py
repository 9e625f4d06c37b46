"""TTS training data: corpus rows -> cached codec tokens and aligner durations -> padded batches.

Axes: B batch, N phonemes, F codec frames (25 Hz), K codebooks, M mel bands, T mel frames (100 Hz).

The TTS model never runs the codec or the aligner while it trains: ``prepare``
steps write one compact ``.npz`` per split into a cache folder, once:

- ``codes-<split>.npz``: per utterance its id, voice index, phoneme ids and
  codec codes ``[K, F]`` (int16, concatenated with offsets), mel frame count;
- ``durations-<split>.npz``: per phoneme its aligner duration in 100 Hz mel
  frames (>= 1) and in 25 Hz codec frames (rounded cumulative sums, may be 0,
  sums to ``F``);
- ``meta.json``: codec info, codebooks, voices, phoneme vocabulary, sources.

Batches group utterances of similar length under a padded-frame budget; the
batch order of epoch ``e`` is a pure function of ``(seed, e)``, so a resumed
run replays the same data.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokenspeech.audio import load_audio
from tokenspeech.errors import AudioError, ConfigError
from tokenspeech.features import MelConfig
from tokenspeech.models.aligner import Aligner, durations_to_frames, monotonic_alignment
from tokenspeech.models.frontend import LogMel
from tokenspeech.text.vocab import Vocabulary

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Utterance:
    """One corpus row usable for TTS."""

    id: str
    path: Path
    voice: str
    phonemes: str
    duration: float


def read_utterances(corpus: Path, split: str, voices: tuple[str, ...], max_seconds: float,
                    min_seconds: float = 0.3) -> list[Utterance]:
    """Rows of ``split`` spoken by one of ``voices`` with phonemes, 16 kHz, existing audio, duration in range.

    Reads ``corpus/<split>.jsonl``, else ``corpus/done.jsonl`` (a corpus still
    being built), or ``corpus`` itself when it is a JSONL file.
    """
    corpus = Path(corpus)
    listing = corpus if corpus.is_file() else next(
        (p for p in (corpus / f"{split}.jsonl", corpus / "done.jsonl") if p.is_file()), None)
    if listing is None:
        raise ConfigError(f"{corpus}: no {split}.jsonl or done.jsonl; build the corpus with `tokenspeech data build`")
    rows, skipped = [], 0
    for line in listing.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:  # a line still being written by the corpus builder
            row = None
        if not row or "error" in row or row.get("split", split) != split or row.get("voice") not in voices:
            continue
        path = listing.parent / row.get("path", "")
        duration = float(row.get("duration", 0.0))
        if (not row.get("phonemes") or row.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE
                or not min_seconds <= duration <= max_seconds or not path.is_file()):
            skipped += 1
            continue
        rows.append(Utterance(row["id"], path, row["voice"], row["phonemes"], duration))
    if skipped:
        logger.info("%s: skipped %d %s rows (no phonemes, other rate, length out of range, missing file)",
                    listing, skipped, split)
    return rows


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.partial.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _concat(pieces: list[np.ndarray], axis: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    lengths = [p.shape[axis] for p in pieces]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = np.concatenate(pieces, axis=axis).astype(dtype) if pieces else np.zeros((0,), dtype)
    return data, offsets


def encode_codes(utterances: list[Utterance], codec: Any, codebooks: int, voices: tuple[str, ...],
                 vocabulary: Vocabulary, path: Path) -> int:
    """Encode every utterance with ``codec`` (first ``codebooks``) into ``path`` (``codes-<split>.npz``).

    Unreadable audio is skipped with a warning. Returns the number written.
    """
    mel = MelConfig()
    ids, voice, phonemes, codes, mel_frames = [], [], [], [], []
    for count, utt in enumerate(utterances):
        try:
            wav, _ = load_audio(utt.path, SAMPLE_RATE)
        except AudioError as error:
            logger.warning("skipping %s: %s", utt.id, error)
            continue
        with torch.inference_mode():
            code = codec.encode(torch.from_numpy(wav)[None, None], codebooks)
        code = np.asarray(code)[0] if not isinstance(code, Tensor) else code[0].numpy()
        ids.append(utt.id)
        voice.append(voices.index(utt.voice))
        phonemes.append(np.asarray(vocabulary.encode(utt.phonemes), dtype=np.int64))
        codes.append(code)
        mel_frames.append(mel.num_frames(wav.shape[0]))
        if (count + 1) % 500 == 0:
            logger.info("encoded %d / %d utterances", count + 1, len(utterances))
    phoneme_data, phoneme_offsets = _concat(phonemes, 0, np.int16)
    code_data, frame_offsets = _concat(codes, 1, np.int16) if codes else (np.zeros((codebooks, 0), np.int16),
                                                                            np.zeros(1, np.int64))
    _atomic_savez(path, version=np.array(CACHE_VERSION), ids=np.array(ids), voice=np.array(voice, dtype=np.int16),
                  phonemes=phoneme_data, phoneme_offsets=phoneme_offsets, codes=code_data,
                  frame_offsets=frame_offsets, mel_frames=np.array(mel_frames, dtype=np.int32))
    return len(ids)


@dataclass
class TokenCache:
    """The contents of ``codes-<split>.npz`` (and, once aligned, ``durations-<split>.npz``)."""

    ids: np.ndarray
    voice: np.ndarray
    phonemes: np.ndarray
    phoneme_offsets: np.ndarray
    codes: np.ndarray  # [K, total F]
    frame_offsets: np.ndarray
    mel_frames: np.ndarray
    durations: np.ndarray | None = None  # [total N] 25 Hz frames
    mel_durations: np.ndarray | None = None  # [total N] 100 Hz frames

    @classmethod
    def load(cls, codes_path: Path, durations_path: Path | None = None) -> TokenCache:
        with np.load(codes_path) as data:
            if int(data["version"]) != CACHE_VERSION:
                raise ConfigError(f"{codes_path}: cache version {int(data['version'])} != {CACHE_VERSION}; "
                                  "delete the cache folder to rebuild it")
            cache = cls(*(data[k] for k in ("ids", "voice", "phonemes", "phoneme_offsets", "codes",
                                            "frame_offsets", "mel_frames")))
        if durations_path is not None:
            with np.load(durations_path) as data:
                if len(data["durations"]) != len(cache.phonemes):
                    raise ConfigError(f"{durations_path} does not match {codes_path}; delete it to realign")
                cache.durations, cache.mel_durations = data["durations"], data["mel_durations"]
        return cache

    def __len__(self) -> int:
        return len(self.ids)

    def phoneme_ids(self, i: int) -> np.ndarray:
        return self.phonemes[self.phoneme_offsets[i]:self.phoneme_offsets[i + 1]].astype(np.int64)

    def item_codes(self, i: int) -> np.ndarray:
        return self.codes[:, self.frame_offsets[i]:self.frame_offsets[i + 1]].astype(np.int64)

    def frames(self) -> np.ndarray:
        return np.diff(self.frame_offsets)

    def item_durations(self, i: int) -> np.ndarray:
        if self.durations is None:
            raise RuntimeError("durations are not loaded; run the alignment step first")
        return self.durations[self.phoneme_offsets[i]:self.phoneme_offsets[i + 1]].astype(np.int64)


def load_mel(path: Path, frontend: LogMel) -> Tensor:
    """Log-mel ``[M, T]`` of one file (100 Hz)."""
    wav, _ = load_audio(path, SAMPLE_RATE)
    with torch.inference_mode():
        return frontend(torch.from_numpy(wav)[None])[0]


def pad_stack(arrays: list[np.ndarray], value: int = 0) -> Tensor:
    """Right-pad 1-D arrays (or ``[C, L]`` arrays along L) to one int64 tensor."""
    longest = max(a.shape[-1] for a in arrays)
    out = np.full((len(arrays),) + arrays[0].shape[:-1] + (longest,), value, dtype=np.int64)
    for i, a in enumerate(arrays):
        out[i, ..., :a.shape[-1]] = a
    return torch.from_numpy(out)


def mel_batch(paths: list[Path], frontend: LogMel) -> tuple[Tensor, Tensor]:
    """Padded log-mels ``[B, M, T]`` and lengths ``[B]``."""
    mels = [load_mel(p, frontend) for p in paths]
    lengths = torch.tensor([m.shape[1] for m in mels])
    out = torch.zeros(len(mels), mels[0].shape[0], int(lengths.max()))
    for i, m in enumerate(mels):
        out[i, :, :m.shape[1]] = m
    return out, lengths


@torch.inference_mode()
def align_cache(cache: TokenCache, paths: list[Path], aligner: Aligner, frontend: LogMel, path: Path,
                batch_size: int = 8) -> None:
    """Hard durations of every cached utterance by MAS over the aligner's soft alignment; writes ``path``.

    ``paths[i]`` is the audio of ``cache.ids[i]``.
    """
    aligner.eval()
    mel_durations = np.zeros(len(cache.phonemes), dtype=np.int16)
    durations = np.zeros(len(cache.phonemes), dtype=np.int16)
    frames = cache.frames()
    for start in range(0, len(cache), batch_size):
        rows = list(range(start, min(start + batch_size, len(cache))))
        mel, mel_lengths = mel_batch([paths[i] for i in rows], frontend)
        phonemes = pad_stack([cache.phoneme_ids(i) for i in rows])
        lengths = torch.tensor([len(cache.phoneme_ids(i)) for i in rows])
        log_attention = aligner(phonemes, lengths, mel, mel_lengths).numpy()
        for j, i in enumerate(rows):
            n, t = int(lengths[j]), int(mel_lengths[j])
            d100 = monotonic_alignment(log_attention[j, :t, :n])
            lo, hi = cache.phoneme_offsets[i], cache.phoneme_offsets[i + 1]
            mel_durations[lo:hi] = d100
            durations[lo:hi] = durations_to_frames(d100, int(frames[i]))
        if (start // batch_size + 1) % 100 == 0:
            logger.info("aligned %d / %d utterances", start + len(rows), len(cache))
    _atomic_savez(path, version=np.array(CACHE_VERSION), durations=durations, mel_durations=mel_durations)


@dataclass(frozen=True)
class TtsBatch:
    """Padded training batch."""

    phonemes: Tensor  # [B, N]
    phoneme_lengths: Tensor  # [B]
    voice: Tensor  # [B]
    durations: Tensor  # [B, N] 25 Hz frames, 0 for padding
    codes: Tensor  # [B, K, F]
    frame_lengths: Tensor  # [B]


def make_batch(cache: TokenCache, rows: list[int]) -> TtsBatch:
    phonemes = [cache.phoneme_ids(i) for i in rows]
    return TtsBatch(pad_stack(phonemes), torch.tensor([len(p) for p in phonemes]),
                    torch.from_numpy(cache.voice[rows].astype(np.int64)),
                    pad_stack([cache.item_durations(i) for i in rows]),
                    pad_stack([cache.item_codes(i) for i in rows]),
                    torch.from_numpy(cache.frames()[rows].astype(np.int64)))


def epoch_batches(lengths: np.ndarray, max_batch_frames: int, seed: int, epoch: int,
                  max_batch_size: int = 64) -> list[list[int]]:
    """Rows grouped by similar length, each batch's ``size x longest <= max_batch_frames``; shuffled.

    A pure function of ``(seed, epoch)``: lengths are jittered by up to 10 %
    before sorting so batches differ between epochs.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.argsort(lengths * rng.uniform(0.95, 1.05, len(lengths)), kind="stable")
    batches, current, longest = [], [], 0
    for row in order:
        longer = max(longest, int(lengths[row]))
        if current and (longer * (len(current) + 1) > max_batch_frames or len(current) >= max_batch_size):
            batches.append(current)
            current, longer = [], int(lengths[row])
        current.append(int(row))
        longest = longer
    if current:
        batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchStream:
    """Training batches by global step: step ``s`` is always the same batch (for exact resume)."""

    def __init__(self, cache: TokenCache, max_batch_frames: int, seed: int) -> None:
        self.cache = cache
        self.max_batch_frames = max_batch_frames
        self.seed = seed
        self._starts = [0]  # global step of the first batch of each epoch computed so far
        self._current: tuple[int, list[list[int]]] | None = None

    def _epoch(self, epoch: int) -> list[list[int]]:
        if self._current is None or self._current[0] != epoch:
            self._current = (epoch, epoch_batches(self.cache.frames(), self.max_batch_frames, self.seed, epoch))
        return self._current[1]

    def locate(self, step: int) -> tuple[int, int]:
        """``(epoch, index in epoch)`` of global ``step``."""
        while self._starts[-1] <= step:
            epoch = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self._epoch(epoch)))
        epoch = int(np.searchsorted(self._starts, step, side="right")) - 1
        return epoch, step - self._starts[epoch]

    def batch(self, step: int) -> TtsBatch:
        epoch, index = self.locate(step)
        return make_batch(self.cache, self._epoch(epoch)[index])
