"""The TTS training recipe: ``train_tts(TtsTrainOptions)``, four resumable phases in one run folder.

1. **codes** - encode the corpus with the codec once (``cache/codes-<split>.npz``).
2. **aligner** - train the RAD-TTS-style aligner (forward-sum loss, beta-binomial
   prior) on 100 Hz log-mels for ``aligner_steps`` steps (``aligner.pt``).
3. **durations** - Viterbi (MAS) durations per phoneme at 100 Hz, rounded to
   25 Hz codec frames (``cache/durations-<split>.npz``).
4. **tts** - text encoder + duration predictor + masked codec transformer +
   AR codec LM, jointly. Each step, per utterance:

   - a stage ``k`` (codebook 1 with ``first_codebook_prob``, else uniform
     over 2..K; or drawn by ``stage_weights``): codebooks < k given, codebook k masked at a ratio
     ``cos(pi/2 u)``, codebooks > k fully masked (MaskGCT/SoundStorm);
   - with ``block_prob`` a semi-AR item: a random block size and block;
     earlier blocks show only their first ``context_codebooks`` codebooks,
     attention is block-causal, the loss covers that block only; otherwise
     full attention over the utterance;
   - with ``uncond_prob`` the conditioning is replaced by the null vector
     (classifier-free guidance);

   loss = CE(stage codebook, masked) + CE(later codebooks) + ar_weight * CE(AR LM)
   + duration_weight * MSE(log(1 + d)).

Every random choice is seeded by ``(seed, step)`` and batches are a pure
function of the step, so ``resume=True`` continues exactly. ``last.pt`` is
written atomically every ``checkpoint_every`` steps; ``train_log.jsonl`` gets
one JSON line per log interval and evaluation; ``tts.safetensors`` +
``tts.json`` are exported every ``export_every`` steps and at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.errors import ConfigError
from tokenspeech.features import MelConfig
from tokenspeech.models.aligner import Aligner, AlignerConfig, forward_sum_loss
from tokenspeech.models.frontend import LogMel
from tokenspeech.models.tts import TtsConfig, TtsModel, block_causal_mask, count_parameters
from tokenspeech.text.vocab import Vocabulary, continued_phonemes, phoneme_vocabulary
from tokenspeech.training.stopping import stop_requests
from tokenspeech.training.tts_data import (
    BatchStream,
    TokenCache,
    TtsBatch,
    Utterance,
    align_cache,
    encode_codes,
    make_batch,
    mel_batch,
    pad_stack,
    read_utterances,
)
from tokenspeech.tts.model_io import save_tts_model

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "last.pt"
ALIGNER_NAME = "aligner.pt"
LOG_NAME = "train_log.jsonl"
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class MaskingOptions:
    """How training inputs are masked (see the module docstring).

    ``stage_weights``, when given, replaces ``first_codebook_prob``: relative
    weights of the stages 1..K, one per codebook. Session 14's oracle
    (bench/tts_oracle.py) found the words lost in codebook 2 given codebook 1,
    a stage the default draws only 1 time in 10 with 6 codebooks.
    """

    first_codebook_prob: float = 0.5
    block_prob: float = 0.4
    block_sizes: tuple[int, ...] = (4, 8, 16)
    uncond_prob: float = 0.1
    stage_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("first_codebook_prob", "block_prob", "uncond_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"MaskingOptions.{name} must be in [0, 1]")
        if not self.block_sizes or min(self.block_sizes) < 1:
            raise ConfigError("MaskingOptions.block_sizes must be positive frame counts")
        if self.stage_weights and (min(self.stage_weights) < 0 or sum(self.stage_weights) <= 0):
            raise ConfigError(f"MaskingOptions.stage_weights must be >= 0 with a positive sum, got "
                              f"{self.stage_weights}")

    def stage_probabilities(self, codebooks: int) -> np.ndarray:
        """Probability of each stage 1..``codebooks`` (index 0 = codebook 1)."""
        if self.stage_weights:
            if len(self.stage_weights) != codebooks:
                raise ConfigError(f"MaskingOptions.stage_weights has {len(self.stage_weights)} weights for "
                                  f"{codebooks} codebooks; give one per codebook")
            weights = np.asarray(self.stage_weights, dtype=np.float64)
            return weights / weights.sum()
        if codebooks == 1:
            return np.ones(1)
        rest = (1.0 - self.first_codebook_prob) / (codebooks - 1)
        return np.array([self.first_codebook_prob] + [rest] * (codebooks - 1))


def _default_model() -> TtsConfig:
    return TtsConfig(num_phonemes=1, num_voices=1)


@dataclass(frozen=True)
class TtsTrainOptions:
    """Everything a TTS training run depends on; validated on construction.

    ``model`` gives the dimensions; its ``num_phonemes``, ``num_voices``,
    ``num_codebooks`` and ``codebook_size`` are filled in from the data and
    ``codebooks``. ``aligner.num_phonemes`` likewise.
    """

    corpus: Path  # corpus folder (train.jsonl + dev.jsonl, or done.jsonl) or a JSONL listing
    out: Path  # run folder
    codec: Path | None = None  # tscodec weights (default: tokenspeech/assets/tscodec)
    voices: tuple[str, ...] = ("joe", "espeak-us", "espeak-gb-f")
    codebooks: int = 6
    max_seconds: float = 20.0
    model: TtsConfig = field(default_factory=_default_model)
    aligner: AlignerConfig = field(default_factory=lambda: AlignerConfig(num_phonemes=1))
    aligner_steps: int = 1500
    aligner_batch_size: int = 16
    aligner_max_seconds: float = 10.0
    aligner_lr: float = 1e-3
    steps: int = 8000
    init_from: Path | None = None  # new run: start from these exported weights (tts.safetensors) at their step
    stop_at: int = 0  # > 0: stop (checkpointed) at this step although the schedule runs to `steps`; resume later
    time_limit_minutes: float | None = None  # stop the TTS phase (checkpointed, exported) after this wall time
    max_batch_frames: int = 2000  # padded 25 Hz frames per batch (2000 = 80 s of audio; ~3 CPU-s per step)
    lr: float = 5e-4
    warmup: int = 400
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    masking: MaskingOptions = field(default_factory=MaskingOptions)
    ar_weight: float = 1.0
    duration_weight: float = 1.0
    threads: int = 2
    seed: int = 0
    resume: bool = False
    bf16: bool = False  # forward and backward under bfloat16 autocast (weights, optimiser and losses float32)
    log_every: int = 10
    checkpoint_every: int = 200
    export_every: int = 1000
    eval_utterances: int = 64

    def __post_init__(self) -> None:
        positive = ("codebooks", "aligner_batch_size", "steps", "max_batch_frames", "threads", "log_every",
                    "checkpoint_every", "export_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TtsTrainOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.aligner_steps < 0 or self.warmup < 0 or self.eval_utterances < 0 or self.stop_at < 0:
            raise ConfigError("aligner_steps, warmup, eval_utterances and stop_at must be >= 0")
        if not self.voices:
            raise ConfigError("TtsTrainOptions.voices must name at least one voice")
        self.masking.stage_probabilities(self.codebooks)  # one weight per codebook, or a ConfigError now
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ConfigError(f"time_limit_minutes must be > 0, got {self.time_limit_minutes}")
        if self.lr <= 0 or self.aligner_lr <= 0 or self.max_seconds <= 0:
            raise ConfigError("learning rates and max_seconds must be > 0")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass(frozen=True)
class TtsTrainResult:
    steps: int
    weights: Path
    card: Path
    dev: dict[str, float]


@dataclass
class PreparedData:
    """The cached corpus: vocabulary, voices, codec, token caches and the audio paths behind them."""

    vocabulary: Vocabulary
    voices: tuple[str, ...]
    codec: CodecInfo
    caches: dict[str, TokenCache]
    paths: dict[str, list[Path]]
    hours: dict[str, float]


# ----------------------------------------------------------------------------- logging / checkpoints


class RunLog:
    """Appends JSON lines to ``train_log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **record: Any) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


# ----------------------------------------------------------------------------- phase 1: codes


def _load_codec(options: TtsTrainOptions, codec: Any | None) -> Any:
    if codec is not None:
        return codec
    from tokenspeech.codecs.native import load_native_codec

    return load_native_codec(options.codec)


def _run_vocabulary(options: TtsTrainOptions, phoneme_strings: Iterable[str]) -> Vocabulary:
    """The phoneme symbols of this run: those of the data, or of the ``init_from`` model when it has them all.

    A model continued on new sentences keeps its own symbol table (ids are
    positions in its embedding), so symbols it knows but the new corpus never
    uses (a rare nasalised vowel, say) do not make the two disagree.
    """
    seen = phoneme_vocabulary(phoneme_strings)
    if options.init_from is None:
        return seen
    from tokenspeech.tts.model_io import read_tts_card

    model_symbols = Vocabulary.from_json(read_tts_card(options.init_from)["phoneme_vocabulary"])
    return continued_phonemes(model_symbols, seen, options.init_from)


def prepare_data(options: TtsTrainOptions, codec: Any | None = None) -> PreparedData:
    """Phase 1: read the corpus and encode it (reusing ``out/cache`` when it matches the corpus)."""
    cache_dir = options.out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows = {split: read_utterances(options.corpus, split, options.voices, options.max_seconds) for split in SPLITS}
    if not rows["train"]:
        raise ConfigError(f"{options.corpus}: no train rows for voices {', '.join(options.voices)}")
    voices = tuple(v for v in options.voices if any(u.voice == v for u in rows["train"]))
    if len(voices) < len(options.voices):
        logger.warning("no train rows for voices %s; training without them",
                       ", ".join(sorted(set(options.voices) - set(voices))))
    meta_path = cache_dir / "meta.json"
    listing = {split: [u.id for u in rows[split]] for split in SPLITS}
    vocabulary = _run_vocabulary(options, (u.phonemes for split in SPLITS for u in rows[split]))
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is None or meta.get("listing") != listing or meta.get("codebooks") != options.codebooks \
            or meta.get("vocabulary") != vocabulary.to_json():
        if meta is not None:
            logger.warning("the corpus, codebooks or phoneme symbols changed since %s was written: re-encoding",
                           cache_dir)
        codec = _load_codec(options, codec)
        for split in SPLITS:
            started = time.time()
            count = encode_codes(rows[split], codec, options.codebooks, voices, vocabulary,
                                 cache_dir / f"codes-{split}.npz")
            logger.info("encoded %d %s utterances in %.0f s", count, split, time.time() - started)
            (cache_dir / f"durations-{split}.npz").unlink(missing_ok=True)
        meta = {"version": 1, "codec": codec.info.to_json(), "codebooks": options.codebooks, "voices": list(voices),
                "vocabulary": vocabulary.to_json(), "listing": listing, "corpus": str(options.corpus)}
        tmp = meta_path.with_name(".meta.json.partial")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    caches = {split: TokenCache.load(cache_dir / f"codes-{split}.npz") for split in SPLITS}
    by_id = {u.id: u for split in SPLITS for u in rows[split]}
    paths = {split: [by_id[str(i)].path for i in caches[split].ids] for split in SPLITS}
    hours = {split: float(caches[split].frames().sum()) / (25 * 3600) for split in SPLITS}
    return PreparedData(Vocabulary.from_json(meta["vocabulary"]), tuple(meta["voices"]),
                        CodecInfo.from_json(meta["codec"]), caches, paths, hours)


# ----------------------------------------------------------------------------- phase 2-3: alignment


def train_aligner(options: TtsTrainOptions, data: PreparedData, log: RunLog) -> Aligner:
    """Phase 2: train (or resume, or just load) the aligner in ``out/aligner.pt``."""
    path = options.out / ALIGNER_NAME
    config = replace(options.aligner, num_phonemes=len(data.vocabulary))
    aligner = Aligner(config)
    optimizer = torch.optim.AdamW(aligner.parameters(), lr=options.aligner_lr, weight_decay=options.weight_decay,
                                  foreach=True)
    step = 0
    if path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        aligner.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = checkpoint["step"]
    cache, paths = data.caches["train"], data.paths["train"]
    short = [i for i in range(len(cache)) if cache.mel_frames[i] <= options.aligner_max_seconds * 100] or list(
        range(len(cache)))
    frontend = LogMel(MelConfig())
    if step == 0 and options.aligner_steps > 0:
        rng = np.random.default_rng([options.seed, 7])
        sample = rng.choice(short, size=min(64, len(short)), replace=False)
        aligner.set_mel_statistics(*mel_batch([paths[i] for i in sample], frontend))
    aligner.train()
    started = time.time()
    while step < options.aligner_steps:
        rng = np.random.default_rng([options.seed, 1, step])
        rows = [int(r) for r in rng.choice(short, size=min(options.aligner_batch_size, len(short)), replace=False)]
        mel, mel_lengths = mel_batch([paths[i] for i in rows], frontend)
        phonemes = pad_stack([cache.phoneme_ids(i) for i in rows])
        lengths = torch.tensor([len(cache.phoneme_ids(i)) for i in rows])
        loss = forward_sum_loss(aligner(phonemes, lengths, mel, mel_lengths), lengths, mel_lengths,
                                config.blank_logprob)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(aligner.parameters(), options.grad_clip)
        optimizer.step()
        step += 1
        if step % options.log_every == 0 or step == options.aligner_steps:
            log.write(phase="aligner", step=step, forward_sum=loss.item(), seconds=time.time() - started)
            logger.info("aligner step %d: forward-sum loss %.4f", step, loss.item())
        if step % options.checkpoint_every == 0 or step == options.aligner_steps:
            _atomic_torch_save({"version": CHECKPOINT_VERSION, "config": config.to_json(), "step": step,
                                "model": aligner.state_dict(), "optimizer": optimizer.state_dict()}, path)
    return aligner.eval()


def align_data(options: TtsTrainOptions, data: PreparedData, aligner: Aligner) -> None:
    """Phase 3: durations for every cached split (skipped when ``cache/durations-<split>.npz`` exists)."""
    frontend = LogMel(MelConfig())
    for split in SPLITS:
        path = options.out / "cache" / f"durations-{split}.npz"
        if not path.is_file():
            started = time.time()
            align_cache(data.caches[split], data.paths[split], aligner, frontend, path)
            logger.info("aligned %s in %.0f s", split, time.time() - started)
        data.caches[split] = TokenCache.load(options.out / "cache" / f"codes-{split}.npz", path)


# ----------------------------------------------------------------------------- phase 4: the TTS model


@dataclass(frozen=True)
class MaskedInputs:
    """Inputs and loss positions of the masked codec transformer for one batch."""

    codes: Tensor  # [B, K, F] with mask_id where hidden
    stage_target: Tensor  # [B, K, F] bool: masked positions of each item's stage codebook
    later_target: Tensor  # [B, K, F] bool: positions of the codebooks after the stage (all masked)
    attention: Tensor  # [B, 1, F, F] bool
    uncond: Tensor  # [B] bool: use the null conditioning


def masked_inputs(codes: Tensor, lengths: Tensor, options: MaskingOptions, config: TtsConfig,
                  rng: np.random.Generator) -> MaskedInputs:
    """Draw each item's stage, mask ratio, attention mode and guidance drop (see the module docstring)."""
    batch, codebooks, frames = codes.shape
    mask_id = config.mask_id
    inputs = codes.clone()
    stage_target = torch.zeros(codes.shape, dtype=torch.bool)
    later_target = torch.zeros(codes.shape, dtype=torch.bool)
    block = torch.full((batch,), max(frames, 1), dtype=torch.long)
    uncond = torch.zeros(batch, dtype=torch.bool)
    stages = options.stage_probabilities(codebooks)
    for b in range(batch):
        length = int(lengths[b])
        k = _draw_stage(stages, options, rng)
        lo, hi = 0, length
        if rng.random() < options.block_prob:
            size = int(rng.choice(options.block_sizes))
            index = int(rng.integers(0, math.ceil(length / size)))
            lo, hi = index * size, min(length, (index + 1) * size)
            block[b] = size
            inputs[b, config.context_codebooks:, :lo] = mask_id
        count = max(1, math.ceil(math.cos(0.5 * math.pi * rng.random()) * (hi - lo)))
        positions = torch.from_numpy(lo + rng.permutation(hi - lo)[:count])
        inputs[b, k, positions] = mask_id
        stage_target[b, k, positions] = True
        inputs[b, k + 1:, lo:hi] = mask_id
        later_target[b, k + 1:, lo:hi] = True
        inputs[b, :, hi:] = mask_id
        uncond[b] = bool(rng.random() < options.uncond_prob)
    return MaskedInputs(inputs, stage_target, later_target, block_causal_mask(frames, block, lengths), uncond)


def _draw_stage(stages: np.ndarray, options: MaskingOptions, rng: np.random.Generator) -> int:
    if options.stage_weights:
        return int(rng.choice(len(stages), p=stages))
    # the default's original draw, kept so runs started before stage_weights resume on the same masks
    codebooks = len(stages)
    return 0 if codebooks == 1 or rng.random() < options.first_codebook_prob else int(rng.integers(1, codebooks))


def _masked_ce(logits: Tensor, codes: Tensor, where: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of ``logits [B, K, F, V]`` at ``where [B, K, F]``."""
    if not bool(where.any()):
        zero = logits.new_zeros(())
        return zero, zero
    selected = logits[where].float()  # bf16 under autocast: the softmax and its loss in float32
    target = codes[where]
    return F.cross_entropy(selected, target), (selected.argmax(-1) == target).float().mean()


def _masked_logits(model: TtsModel, batch: TtsBatch, cond: Tensor, masking: MaskingOptions,
                   rng: np.random.Generator) -> tuple[MaskedInputs, Tensor]:
    """One batch masked by ``masking`` and the codec transformer's logits ``[B, K, F, V]`` over it."""
    masked = masked_inputs(batch.codes, batch.frame_lengths, masking, model.config, rng)
    codec_cond = torch.where(masked.uncond[:, None, None], model.conditioner.unconditional(cond), cond)
    return masked, model.codec.heads(model.codec(masked.codes, codec_cond, masked.attention))


def tts_losses(model: TtsModel, batch: TtsBatch, options: TtsTrainOptions, rng: np.random.Generator) -> dict[str,
                                                                                                          Tensor]:
    """Every loss term of one batch (``total`` included)."""
    h, log_durations = model.encode_text(batch.phonemes, batch.voice, batch.phoneme_lengths)
    phoneme_valid = torch.arange(batch.phonemes.shape[1])[None, :] < batch.phoneme_lengths[:, None]
    duration = F.mse_loss(log_durations[phoneme_valid].float(),
                          torch.log1p(batch.durations.float())[phoneme_valid])
    frames = batch.codes.shape[2]
    cond, _ = model.condition(h, batch.durations, batch.voice, frames)
    masked, logits = _masked_logits(model, batch, cond, options.masking, rng)
    stage, stage_accuracy = _masked_ce(logits, batch.codes, masked.stage_target)
    later, _ = _masked_ce(logits, batch.codes, masked.later_target)
    losses = {"duration": duration, "stage": stage, "later": later, "stage_accuracy": stage_accuracy}
    total = stage + later + options.duration_weight * duration
    if model.ar is not None:
        bos = torch.full((batch.codes.shape[0], 1), model.config.mask_id, dtype=torch.long)
        previous = torch.cat([bos, batch.codes[:, 0, :-1]], dim=1)
        ar_logits = model.ar(previous, cond, batch.frame_lengths)
        frame_valid = torch.arange(frames)[None, :] < batch.frame_lengths[:, None]
        losses["ar"] = F.cross_entropy(ar_logits[frame_valid].float(), batch.codes[:, 0][frame_valid])
        total = total + options.ar_weight * losses["ar"]
    losses["total"] = total
    return losses


def _lr(options: TtsTrainOptions, step: int) -> float:
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = min(1.0, (step - options.warmup) / max(1, options.steps - options.warmup))
    return options.lr * (options.min_lr_ratio + (1 - options.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _dev_batches(count: int, size: int = 8) -> list[list[int]]:
    """Rows ``0..count-1`` in batches of ``size``, in order (dev evaluation)."""
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


@torch.no_grad()
def evaluate(model: TtsModel, cache: TokenCache, options: TtsTrainOptions) -> dict[str, float]:
    """Mean dev losses over the first ``eval_utterances``.

    The masks are fixed and drawn with the default ``MaskingOptions`` whatever
    the run trains with, so dev losses compare across steps and across runs.
    """
    count = min(options.eval_utterances, len(cache))
    if count == 0:
        return {}
    model.eval()
    options = replace(options, masking=MaskingOptions())
    rng = np.random.default_rng([options.seed, 99])
    totals: dict[str, float] = {}
    for rows in _dev_batches(count):
        for name, value in tts_losses(model, make_batch(cache, rows), options, rng).items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(rows)
    model.train()
    return {f"dev_{name}": value / count for name, value in totals.items()}


@torch.no_grad()
def stage_losses(model: TtsModel, cache: TokenCache, count: int, seed: int = 0) -> list[dict[str, float]]:
    """Cross-entropy and accuracy of each codebook k given codebooks 1..k-1 (the stage-k task), per stage.

    The first ``count`` utterances of ``cache``, full attention, no guidance
    drop, a mask ratio drawn per utterance as in training; the masks depend on
    ``seed`` and the stage only, so two models are scored on the same inputs.
    A finer lens than ``evaluate``'s mixture of stages: one number per codebook.
    """
    count = min(count, len(cache))
    codebooks = model.config.num_codebooks
    batches = _dev_batches(count)
    was_training = model.training
    model.eval()
    results = []
    for stage in range(codebooks):
        weights = tuple(1.0 if k == stage else 0.0 for k in range(codebooks))
        options = MaskingOptions(block_prob=0.0, uncond_prob=0.0, stage_weights=weights)
        rng = np.random.default_rng([seed, stage])
        loss_sum = correct = 0.0
        positions = 0
        for rows in batches:
            batch = make_batch(cache, rows)
            h, _ = model.encode_text(batch.phonemes, batch.voice, batch.phoneme_lengths)
            cond, _ = model.condition(h, batch.durations, batch.voice, batch.codes.shape[2])
            masked, logits = _masked_logits(model, batch, cond, options, rng)
            selected, target = logits[masked.stage_target], batch.codes[masked.stage_target]
            loss_sum += float(F.cross_entropy(selected, target, reduction="sum"))
            correct += float((selected.argmax(-1) == target).sum())
            positions += int(target.numel())
        results.append({"codebook": stage + 1, "ce": loss_sum / max(positions, 1),
                        "accuracy": correct / max(positions, 1), "positions": positions})
    model.train(was_training)
    return results


class _TtsRun:
    """The state of phase 4: model, optimiser, step; checkpoint and export."""

    def __init__(self, options: TtsTrainOptions, data: PreparedData, log: RunLog) -> None:
        self.options, self.data, self.log = options, data, log
        config = replace(options.model, num_phonemes=len(data.vocabulary), num_voices=len(data.voices),
                         num_codebooks=options.codebooks, codebook_size=data.codec.codebook_size)
        torch.manual_seed(options.seed)
        self.model = TtsModel(config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr, foreach=True,
                                           weight_decay=options.weight_decay, betas=(0.9, 0.98))
        self.step = 0
        self.dev: dict[str, float] = {}
        checkpoint_path = options.out / CHECKPOINT_NAME
        if checkpoint_path.is_file():
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
            if checkpoint.get("version") != CHECKPOINT_VERSION or TtsConfig.from_json(checkpoint["config"]) != config:
                raise ConfigError(f"{checkpoint_path} was written by a different model configuration; "
                                  "use a new --out folder")
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.step = checkpoint["step"]
            self.dev = checkpoint.get("dev", {})
            logger.info("resumed the TTS model at step %d", self.step)
        elif options.init_from is not None:
            self.step = self._load_exported(options.init_from, config)

    def _load_exported(self, path: Path, config: TtsConfig) -> int:
        """Weights of an exported model (fp16) as the start of this run; returns the step it was exported at.

        The optimiser starts afresh (an export holds no optimiser state) but the
        schedule and the batch order continue from that step. This is how a run
        continues on a machine that has the shipped weights but not ``last.pt``.
        """
        from tokenspeech.tts.model_io import load_tts_model

        bundle = load_tts_model(path)
        parent = bundle.model.config
        grown = parent.frame_layers == 0 < config.frame_layers  # new frame layers start as the identity
        if replace(parent, frame_layers=config.frame_layers) != config or parent.frame_layers not in (
                0, config.frame_layers):
            raise ConfigError(f"{path} has a different model configuration than this run ({parent}); "
                              "train with the same options and corpus (only --frame-layers may be added)")
        if list(bundle.voices) != list(self.data.voices) or bundle.phonemes.to_json() != self.data.vocabulary.to_json():
            raise ConfigError(f"{path} was trained with other voices or phoneme symbols than this corpus gives")
        self.model.load_state_dict({k: v.float() for k, v in bundle.model.state_dict().items()}, strict=not grown)
        if grown:
            logger.info("added %d frame-conditioning layers to %s", config.frame_layers, path)
        step = int(bundle.card.get("training", {}).get("steps", 0))
        logger.info("initialised the TTS model from %s (exported at step %d)", path, step)
        return step

    def checkpoint(self) -> None:
        _atomic_torch_save({"version": CHECKPOINT_VERSION, "config": self.model.config.to_json(), "step": self.step,
                            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "dev": self.dev, "options": self.options.to_json()}, self.options.out / CHECKPOINT_NAME)

    def export(self) -> Path:
        training = {"corpus": str(self.options.corpus), "voices": list(self.data.voices),
                    "hours": self.data.hours, "utterances": {s: len(c) for s, c in self.data.caches.items()},
                    "steps": self.step, "aligner_steps": self.options.aligner_steps,
                    "codebooks": self.options.codebooks, "options": self.options.to_json()}
        return save_tts_model(self.model, self.options.out / "tts", self.data.vocabulary, self.data.voices,
                              self.data.codec, training=training, metrics=self.dev)

    def train_step(self, stream: BatchStream) -> dict[str, float]:
        options = self.options
        batch = stream.batch(self.step)
        torch.manual_seed(_seed(options.seed, 2, self.step))  # dropout
        rng = np.random.default_rng([options.seed, 3, self.step])  # masks
        for group in self.optimizer.param_groups:
            group["lr"] = _lr(options, self.step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bf16):
            losses = tts_losses(self.model, batch, options, rng)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), options.grad_clip)
        if torch.isfinite(norm):
            self.optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient, update skipped", self.step)
        self.step += 1
        return {name: value.item() for name, value in losses.items()} | {"grad_norm": norm.item()}


def train_model(options: TtsTrainOptions, data: PreparedData, log: RunLog) -> TtsTrainResult:
    """Phase 4: the TTS networks, resumable from ``last.pt``."""
    run = _TtsRun(options, data, log)
    logger.info("TTS model: %.2f M parameters, %d train utterances (%.1f h)", count_parameters(run.model) / 1e6,
                len(data.caches["train"]), data.hours["train"])
    stream = BatchStream(data.caches["train"], options.max_batch_frames, options.seed)
    run.model.train()
    started, window = time.time(), []
    last = min(options.steps, options.stop_at) if options.stop_at else options.steps
    deadline = None if options.time_limit_minutes is None else started + 60 * options.time_limit_minutes
    with stop_requests() as stop:
        while run.step < last:
            window.append(run.train_step(stream))
            if (deadline is not None and time.time() > deadline) or stop.requested:
                logger.info("%s at step %d; checkpointing (resume with --resume)",
                            stop.signal_name or "time limit reached", run.step)
                last = run.step
            window = _after_step(run, window, started, last)
    weights = run.export()
    return TtsTrainResult(run.step, weights, weights.with_suffix(".json"), run.dev)


def _after_step(run: _TtsRun, window: list[dict[str, float]], started: float, last: int) -> list[dict[str, float]]:
    """Log, evaluate and checkpoint, export when due; returns the loss window still to be logged."""
    options, log = run.options, run.log
    if run.step % options.log_every == 0 or run.step == last:
        mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        log.write(phase="tts", step=run.step, lr=_lr(options, run.step - 1),
                  seconds=time.time() - started, **mean)
        logger.info("tts step %d: total %.3f stage %.3f acc %.3f ar %.3f duration %.3f", run.step, mean["total"],
                    mean["stage"], mean["stage_accuracy"], mean.get("ar", 0.0), mean["duration"])
        window = []
    if run.step % options.checkpoint_every == 0 or run.step == last:
        run.dev = evaluate(run.model, run.data.caches["dev"], options)
        log.write(phase="tts", step=run.step, **run.dev)
        run.checkpoint()
    if run.step % options.export_every == 0 and run.step < last:
        run.export()
    return window


def train_tts(options: TtsTrainOptions, codec: Any | None = None) -> TtsTrainResult:
    """Run every phase that is not done yet; ``codec`` overrides loading ``options.codec`` (tests)."""
    if (options.out / CHECKPOINT_NAME).is_file() and not options.resume:
        raise ConfigError(f"{options.out} already holds a TTS run ({CHECKPOINT_NAME}); pass resume=True "
                          "(--resume) to continue it or choose another output folder")
    options.out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        log = RunLog(options.out / LOG_NAME)
        data = prepare_data(options, codec)
        aligner = train_aligner(options, data, log)
        align_data(options, data, aligner)
        return train_model(options, data, log)
    finally:
        torch.set_num_threads(previous_threads)


__all__ = [
    "MaskingOptions",
    "TtsTrainOptions",
    "TtsTrainResult",
    "Utterance",
    "align_data",
    "masked_inputs",
    "prepare_data",
    "stage_losses",
    "train_aligner",
    "train_model",
    "train_tts",
    "tts_losses",
]
