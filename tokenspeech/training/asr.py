"""The ASR training recipe: multi-task Conformer training on a corpus, resumable and exported as it goes.

``train_asr(AsrTrainOptions(...))``:

* data: the corpus ``train.jsonl`` in length-bucketed batches of at most
  ``max_batch_seconds`` padded audio; augmentation (speed 0.9/1.0/1.1, noise,
  rooms, telephone band, SpecAugment) drawn from a per-step seed;
* model: :class:`AsrModelConfig` with vocabulary sizes filled in (characters;
  phonemes seen in the training manifest); global feature mean/std measured
  on the first training utterances;
* ``ctc_warmup_steps``: the first steps train the encoder with the CTC heads
  alone at full context. Measured here: with every head on, character CTC
  stayed on its blank plateau (2.7-2.9 nats) for 1,100 steps; CTC alone left
  it within 200 steps (2.9 -> 2.2). The decoder losses fall by learning a
  language model and their gradients drown the encoder's early CTC signal;
* loss: :func:`tokenspeech.training.asr_losses.asr_losses` under dynamic chunk
  training - each step draws full context (``full_context_prob``) or a chunk
  size in ``chunk_range`` so one set of weights serves offline and streaming;
* AdamW, linear warm-up then cosine decay to 5 % of ``lr``;
* ``out/train_log.jsonl`` gets one JSON line per logged step and evaluation;
  ``out/last.pt`` is written atomically every ``checkpoint_every`` steps and
  ``resume=True`` continues exactly (same data order, augmentation and
  dropout draws, since every random choice is seeded by the step);
  ``out/asr.safetensors`` + ``asr.json`` are exported every ``export_every``
  steps and at the end, with greedy-CTC dev WER on ``eval_utterances``;
* ``init_from``: a new run starts from exported weights (the shipped model, say)
  at the step they were exported at. Model sizes and symbol tables come from
  that card; the optimiser starts afresh, so its learning rate ramps up again
  over ``warmup`` steps. This is how training continues on a machine that has
  the shipped weights but not their ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenspeech.asr.model_io import save_asr_model
from tokenspeech.decoding.ctc import ctc_greedy
from tokenspeech.errors import ConfigError
from tokenspeech.features import MelConfig
from tokenspeech.models.asr import AsrModel, AsrModelConfig, count_parameters
from tokenspeech.models.frontend import LogMel
from tokenspeech.text.vocab import Vocabulary, character_vocabulary, continued_phonemes, phoneme_vocabulary
from tokenspeech.training.asr_data import (
    AsrExample,
    BatchMaker,
    bucket_batches,
    corpus_manifest,
    feature_statistics,
    read_manifest,
)
from tokenspeech.training.asr_losses import LossWeights, asr_losses
from tokenspeech.training.augment import AugmentOptions
from tokenspeech.training.stopping import stop_requests

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrTrainOptions:
    """Everything a training run needs; validated here once."""

    corpus: Path  # folder with train.jsonl and dev.jsonl
    out: Path
    steps: int = 1800
    max_batch_seconds: float = 120.0
    max_utterance_seconds: float = 20.0
    lr: float = 1.5e-3
    warmup: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    threads: int = 2
    resume: bool = False
    model: AsrModelConfig = field(default_factory=AsrModelConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    full_context_prob: float = 0.5
    ctc_warmup_steps: int = 300  # steps before this train the encoder with the CTC heads alone, full context
    chunk_range: tuple[int, int] = (2, 16)  # encoder frames (x 40 ms)
    left_chunks: int = 0  # 0 = unlimited left context in chunked steps
    log_every: int = 10
    checkpoint_every: int = 100
    export_every: int = 500
    eval_utterances: int = 40
    seed: int = 0
    phonemes: bool = True  # train the phoneme CTC head when the manifest has phonemes
    stop_at_step: int | None = None  # end this process early (schedule still spans ``steps``); resume later
    time_limit_minutes: float | None = None  # end this process after this wall time, checkpointed
    init_from: Path | None = None  # new run: start from these exported weights (asr.safetensors) at their step
    restart_schedule: bool = False  # with init_from: a new warm-up and cosine cycle from the init step to ``steps``
    bf16: bool = False  # forward and backward under bfloat16 autocast (weights, optimiser and losses float32)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0 or self.threads < 1 or self.ctc_warmup_steps < 0:
            raise ConfigError("steps and threads must be >= 1, warmup and ctc_warmup_steps >= 0")
        if self.max_batch_seconds < self.max_utterance_seconds:
            raise ConfigError("max_batch_seconds must be at least max_utterance_seconds")
        if not 0 <= self.full_context_prob <= 1:
            raise ConfigError("full_context_prob must be in [0, 1]")
        if not 1 <= self.chunk_range[0] <= self.chunk_range[1]:
            raise ConfigError("chunk_range must be (low, high) with 1 <= low <= high")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ConfigError("stop_at_step must be >= 1")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ConfigError("time_limit_minutes must be > 0")
        if self.restart_schedule and self.init_from is None and not self.resume:
            raise ConfigError("restart_schedule restarts the learning-rate schedule at the init_from step: "
                              "give init_from (or resume a run that had it)")
        if min(self.log_every, self.checkpoint_every, self.export_every) < 1:
            raise ConfigError("log_every, checkpoint_every and export_every must be >= 1")


@dataclass
class _Run:
    """Objects of one training run."""

    options: AsrTrainOptions
    model: AsrModel
    optimizer: torch.optim.Optimizer
    maker: BatchMaker
    train: list[AsrExample]
    dev: list[AsrExample]
    vocabulary: Vocabulary
    phonemes: Vocabulary | None
    mel: MelConfig
    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    best_wer: float | None = None
    init_step: int = 0  # the step of the ``init_from`` weights (0: a run from scratch)


def _lr_factor(step: int, options: AsrTrainOptions, init_step: int = 0) -> float:
    """Linear warm-up, then cosine decay to 5 %; a run from exported weights warms up again from ``init_step``.

    By default such a run stays on the original schedule (a late init step
    means a small learning rate). ``restart_schedule`` starts a new cycle
    at ``init_step`` instead (a warm restart): ``lr`` after the warm-up,
    decaying to 5 % at ``steps``.
    """
    start = init_step if options.restart_schedule else 0
    if step - start < options.warmup:
        return (step - start + 1) / options.warmup
    progress = (step - start - options.warmup) / max(1, options.steps - start - options.warmup)
    cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if init_step:  # fresh optimiser moments: ramp up to the schedule's value
        return cosine * min(1.0, (step - init_step + 1) / max(1, options.warmup))
    return cosine


def _saved_phonemes(options: AsrTrainOptions) -> Vocabulary | None:
    """The phoneme vocabulary of the checkpoint being resumed (it must not change mid-run)."""
    path = _checkpoint_path(options)
    if not options.resume or not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False).get("phonemes")
    return Vocabulary.from_json(saved) if saved else None


def _init_card(options: AsrTrainOptions) -> dict[str, Any]:
    """The model card of ``init_from``, checked to be one this recipe can continue."""
    from tokenspeech.asr.model_io import read_asr_card

    card = read_asr_card(options.init_from)
    if Vocabulary.from_json(card["vocabulary"]).to_json() != character_vocabulary().to_json():
        raise ConfigError(f"{options.init_from} writes other characters than this recipe trains; "
                          "train a new model instead of --init-from")
    return card


def _init_phonemes(options: AsrTrainOptions, card: dict[str, Any], train: list[AsrExample]) -> Vocabulary | None:
    """The ``init_from`` model's phoneme symbols, which must cover the corpus's (ids are embedding rows)."""
    if not card.get("phoneme_vocabulary"):
        return None
    seen = phoneme_vocabulary(e.phonemes for e in train if e.phonemes)
    return continued_phonemes(Vocabulary.from_json(card["phoneme_vocabulary"]), seen, options.init_from)


def _setup(options: AsrTrainOptions) -> _Run:
    train_path, dev_path = corpus_manifest(options.corpus, "train"), corpus_manifest(options.corpus, "dev")
    if train_path is None:
        raise ConfigError(f"{options.corpus} has neither train.jsonl nor done.jsonl")
    train = read_manifest(train_path, options.max_utterance_seconds, split="train")
    dev = read_manifest(dev_path, split="dev")[: options.eval_utterances] if dev_path else []
    if not train:
        raise ConfigError(f"{train_path} has no usable training utterances")
    vocabulary = character_vocabulary()
    if options.init_from is not None:
        card = _init_card(options)
        phonemes = _init_phonemes(options, card, train)
        config = AsrModelConfig.from_json(card["config"])
    else:
        has_phonemes = options.phonemes and all(e.phonemes for e in train)
        phonemes = _saved_phonemes(options) or (phoneme_vocabulary(e.phonemes for e in train) if has_phonemes
                                                else None)
        config = replace(options.model, vocab_size=len(vocabulary),
                         phoneme_vocab_size=len(phonemes) if phonemes else 0)
    torch.manual_seed(options.seed)
    model = AsrModel(config)
    mel = MelConfig(n_mels=config.n_mels)
    maker = BatchMaker(LogMel(mel), vocabulary, phonemes, options.augment)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay,
                                  betas=(0.9, 0.98))
    return _Run(options, model, optimizer, maker, train, dev, vocabulary, phonemes, mel)


def _checkpoint_path(options: AsrTrainOptions) -> Path:
    return options.out / "last.pt"


def save_checkpoint(run: _Run) -> None:
    """Write ``last.pt`` atomically (model, optimizer, data position, vocabularies)."""
    path = _checkpoint_path(run.options)
    state = {"step": run.step, "epoch": run.epoch, "batch_index": run.batch_index, "best_wer": run.best_wer,
             "init_step": run.init_step,
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "config": run.model.config.to_json(), "vocabulary": run.vocabulary.to_json(),
             "phonemes": run.phonemes.to_json() if run.phonemes else None}
    tmp = path.with_name(".last.pt.partial")
    torch.save(state, tmp)
    tmp.replace(path)


def _restore(run: _Run) -> None:
    path = _checkpoint_path(run.options)
    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != run.model.config.to_json():
        raise ConfigError(f"{path} was trained with a different model configuration: {state['config']}")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step, run.epoch, run.batch_index = state["step"], state["epoch"], state["batch_index"]
    run.best_wer, run.init_step = state.get("best_wer"), state.get("init_step", 0)
    logger.info("resumed from %s at step %d", path, run.step)


def _load_exported(run: _Run) -> None:
    """Start from the ``init_from`` weights (feature statistics included) at the step they were exported at."""
    from tokenspeech.asr.model_io import load_asr_model

    bundle = load_asr_model(run.options.init_from)
    run.model.load_state_dict({k: v.float() for k, v in bundle.model.state_dict().items()})
    run.step = run.init_step = int(bundle.card.get("training", {}).get("steps", 0))
    if run.step >= run.options.steps:
        raise ConfigError(f"{run.options.init_from} was exported at step {run.step}; --steps must be larger "
                          "(it is the total, counted from the first step of the original run)")
    logger.info("initialised the ASR model from %s (exported at step %d)", run.options.init_from, run.step)


def _epoch_batches(run: _Run) -> list[list[int]]:
    rng = np.random.default_rng([run.options.seed, run.epoch])
    return bucket_batches([e.duration for e in run.train], run.options.max_batch_seconds, rng)


def _next_examples(run: _Run) -> list[AsrExample]:
    batches = _epoch_batches(run)
    if run.batch_index >= len(batches):
        run.epoch, run.batch_index = run.epoch + 1, 0
        batches = _epoch_batches(run)
    examples = [run.train[i] for i in batches[run.batch_index]]
    run.batch_index += 1
    return examples


def _chunking(run: _Run, rng: np.random.Generator) -> tuple[int, int]:
    """This step's (chunk, left_chunks): full context (0) or a random chunk size."""
    if rng.random() < run.options.full_context_prob:
        return 0, 0
    low, high = run.options.chunk_range
    return int(rng.integers(low, high + 1)), run.options.left_chunks


def _log(run: _Run, record: dict[str, Any]) -> None:
    with open(run.options.out / "train_log.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def train_step(run: _Run) -> dict[str, float] | None:
    """One optimisation step; returns the loss values (None when the batch could not be read)."""
    step_seed = run.options.seed * 1_000_003 + run.step
    torch.manual_seed(step_seed)
    batch = run.maker.make(_next_examples(run), seed=step_seed)
    if batch is None:
        return None
    ctc_only = run.step < run.options.ctc_warmup_steps
    chunk, left = (0, 0) if ctc_only else _chunking(run, np.random.default_rng(step_seed))
    for group in run.optimizer.param_groups:
        group["lr"] = run.options.lr * _lr_factor(run.step, run.options, run.init_step)
    run.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.options.bf16):
        losses = asr_losses(run.model, batch, chunk, left, run.options.losses, run.vocabulary.bos_id,
                            run.vocabulary.eos_id, ctc_only=ctc_only)
    run.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.options.grad_clip)
    run.optimizer.step()
    values = {name: round(float(value.detach()), 4) for name, value in losses.items()}
    values.update(chunk=chunk, grad_norm=round(float(grad_norm), 3), audio_seconds=round(batch.audio_seconds, 1),
                  lr=run.optimizer.param_groups[0]["lr"])
    return values


@torch.no_grad()
def dev_wer(run: _Run) -> float | None:
    """Greedy-CTC WER on the dev utterances (full context, no augmentation)."""
    from tokenspeech.eval.wer import error_rates

    if not run.dev:
        return None
    try:
        import jiwer  # noqa: F401  (the [eval] extra; error_rates needs it)
    except ImportError:
        logger.warning("jiwer is not installed (pip install tokenspeech[eval]); skipping the dev WER")
        return None
    run.model.eval()
    refs, hyps = [], []
    for start in range(0, len(run.dev), 16):
        examples = run.dev[start:start + 16]
        batch = run.maker.make(examples, seed=0, train=False)
        if batch is None:
            continue
        encoded, lengths = run.model.encode(batch.mel, batch.mel_lengths)
        log_probs = run.model.ctc_log_probs(encoded).numpy()
        for row, length in enumerate(lengths.tolist()):
            hyps.append(run.vocabulary.decode(ctc_greedy(log_probs[row, :length]).tokens))
            refs.append(examples[row].transcript)
    return error_rates(refs, hyps).wer if refs else None


def _export(run: _Run, wer: float | None) -> Path:
    hours = sum(e.duration for e in run.train) / 3600
    training = {"corpus": str(run.options.corpus), "train_hours": round(hours, 2), "utterances": len(run.train),
                "steps": run.step, "max_batch_seconds": run.options.max_batch_seconds,
                "parameters": count_parameters(run.model), "dynamic_chunk": list(run.options.chunk_range),
                "augment": asdict(run.options.augment), "bf16_autocast": run.options.bf16}
    if run.init_step:  # the steps before it were trained elsewhere (another corpus, perhaps)
        training["init_from"] = {"path": str(run.options.init_from), "step": run.init_step,
                                 "restart_schedule": run.options.restart_schedule}
    metrics = {"dev_wer_ctc_greedy": wer, "dev_utterances": len(run.dev)}
    return save_asr_model(run.model, run.options.out / "asr", run.vocabulary, run.mel, run.phonemes,
                          training, metrics)


def _after_step(run: _Run, values: dict[str, float], started: float, last: bool) -> None:
    options = run.options
    if run.step % options.log_every == 0 or last:
        record = {"step": run.step, **values, "elapsed": round(time.time() - started, 1)}
        logger.info("step %d %s", run.step, " ".join(f"{k}={v}" for k, v in values.items()))
        _log(run, record)
    if run.step % options.checkpoint_every == 0 or last:
        save_checkpoint(run)
    if run.step % options.export_every == 0 or last:
        wer = dev_wer(run)
        _log(run, {"step": run.step, "dev_wer_ctc_greedy": wer})
        logger.info("step %d dev WER (greedy CTC) %s", run.step, wer)
        _export(run, wer)


def train_asr(options: AsrTrainOptions) -> dict[str, Any]:
    """Train (or resume) and return a summary: steps done, last losses, parameter count."""
    torch.set_num_threads(options.threads)
    options.out.mkdir(parents=True, exist_ok=True)
    run = _setup(options)
    if options.resume:
        _restore(run)
    elif options.init_from is not None:
        _load_exported(run)
    else:
        mean, std = feature_statistics(run.maker, run.train[:200])
        run.model.encoder.feature_mean.copy_(mean)
        run.model.encoder.feature_std.copy_(std)
    logger.info("ASR model: %.2f M parameters, decoders %s", count_parameters(run.model) / 1e6,
                ",".join(run.model.config.decoders))
    started, values = time.time(), {}
    end = min(options.steps, options.stop_at_step or options.steps)
    with stop_requests() as stop:
        while run.step < end:
            step_values = train_step(run)
            run.step += 1
            ending = stop.requested or (options.time_limit_minutes is not None
                                        and time.time() - started > 60 * options.time_limit_minutes)
            if step_values is not None:
                values = step_values
                _after_step(run, values, started, last=run.step == end or ending)
            if ending:
                logger.info("%s at step %d; continue with --resume", stop.signal_name or "time limit reached",
                            run.step)
                break
    return {"steps": run.step, "last": values, "parameters": count_parameters(run.model),
            "decoders": list(run.model.config.decoders)}
