"""The tscodec training recipe: ``train_codec(CodecTrainOptions)``.

Each step: a batch of random crops (a pure function of seed and step), a
random number of active codebooks per item (quantizer dropout: with
probability ``ladder_probability`` one of the ``ladder`` counts, else uniform
in 1..K), the codec's reconstruction (delayed by ``output_delay`` samples, so
it is compared with the input shifted by as much), and

    loss = mel_weight * log-mel L1 + magnitude_weight * (spectral convergence + log-magnitude L1)
           + commitment_weight * commitment  [+ adversarial_weight * hinge + feature_weight * feature matching]

over 4 STFT resolutions; codebooks follow EMAs (not the optimizer). AdamW
with linear warm-up then cosine decay to ``min_lr_ratio * lr``. The optional
adversarial terms use encodec's MS-STFT discriminator from
``adversarial_start`` on (off by default: about 10x the step time on CPU).

Outputs in ``out``: ``train_log.jsonl`` (one JSON object per log interval and
per validation), ``last.pt`` (model, optimisers, step, RNG states; written
atomically), ``tscodec.safetensors`` + ``tscodec.json`` (exported every
``export_interval`` steps and at the end). ``resume=True`` continues from
``last.pt`` exactly (same batches, same random draws).

Fine-tuning: ``init_from`` starts a new run from the weights of an exported
codec; with ``freeze_tokenizer`` the encoder and codebooks stay fixed (no
gradients, no EMA or dead-code updates) and only the decoder trains. The
tokens of every utterance are then unchanged, so token models trained on
that codec (TTS) stay valid while the decoder's audio gets better. The run's
``config`` may give the decoder more blocks than the source codec has
(``decoder_blocks`` / ``decoder_fine_blocks``): the extra blocks are appended
to the end of their stack with a zero layer scale, so they start as the
identity and the grown codec decodes exactly like its source at step 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tokenspeech.codecs.native import NAME, save_native_codec
from tokenspeech.errors import ConfigError, TokenspeechError
from tokenspeech.models.codec import CodecConfig, CodecModel, CodecOutput
from tokenspeech.training.audio_dataset import CropSampler, find_listing, read_listing
from tokenspeech.training.losses import (
    MultiResolutionSpectralLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from tokenspeech.training.stopping import stop_requests

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "last.pt"
LOG_NAME = "train_log.jsonl"
MAX_BAD_STEPS = 20  # consecutive non-finite losses before giving up


@dataclass(frozen=True)
class CodecTrainOptions:
    """Everything a tscodec training run depends on; validated on construction."""

    corpus: Path  # corpus folder (train.jsonl or done.jsonl) or a JSONL listing
    out: Path  # run folder: log, checkpoint, exported codec
    steps: int = 10000  # total optimiser steps (a resumed run stops at the same total)
    batch_size: int = 8
    crop_seconds: float = 2.0  # rounded down to whole code frames
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    threads: int = 2
    seed: int = 0
    log_interval: int = 25
    checkpoint_interval: int = 250
    export_interval: int = 1000
    resume: bool = False
    ladder: tuple[int, ...] = (6, 12, 24)  # codebook counts trained more often (1.5 / 3 / 6 kbps)
    ladder_probability: float = 0.6
    mel_weight: float = 1.0
    magnitude_weight: float = 1.0
    commitment_weight: float = 0.1
    adversarial: bool = False
    adversarial_start: int = 2000
    adversarial_weight: float = 0.1
    feature_weight: float = 0.2
    discriminator_lr: float = 2e-4
    validation_items: int = 8
    time_limit_minutes: float | None = None  # stop early (validate, checkpoint, export) after this wall time
    init_from: Path | None = None  # start a new run from these exported codec weights (.safetensors)
    freeze_tokenizer: bool = False  # train the decoder only: encoder + codebooks fixed, tokens unchanged
    config: CodecConfig = field(default_factory=CodecConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", Path(self.corpus))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "ladder", tuple(self.ladder))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        if self.freeze_tokenizer and self.init_from is None and not self.resume:
            raise ConfigError("freeze_tokenizer needs trained codebooks: give init_from (or resume such a run)")
        positive = ("steps", "batch_size", "threads", "log_interval", "checkpoint_interval", "export_interval",
                    "validation_items")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.crop_samples <= 0:
            raise ConfigError(f"crop_seconds must cover at least one code frame "
                              f"({self.config.hop_length / self.config.sample_rate:g} s), got {self.crop_seconds}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.warmup_steps >= 0):
            raise ConfigError("lr must be > 0, min_lr_ratio in [0, 1] and warmup_steps >= 0")
        if not self.ladder or not all(1 <= k <= self.config.num_codebooks for k in self.ladder):
            raise ConfigError(f"ladder {self.ladder} must be codebook counts in 1..{self.config.num_codebooks}")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ConfigError(f"time_limit_minutes must be > 0, got {self.time_limit_minutes}")
        if not 0 <= self.ladder_probability <= 1:
            raise ConfigError(f"ladder_probability must be in [0, 1], got {self.ladder_probability}")

    @property
    def crop_samples(self) -> int:
        hop = self.config.hop_length
        return int(self.crop_seconds * self.config.sample_rate) // hop * hop

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(corpus=str(self.corpus), out=str(self.out), config=self.config.to_json(),
                    init_from=None if self.init_from is None else str(self.init_from))
        return data


@dataclass(frozen=True)
class CodecTrainResult:
    """What a finished run produced."""

    steps: int
    weights: Path
    card: Path
    last_log: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


def learning_rate(options: CodecTrainOptions, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    span = max(1, options.steps - options.warmup_steps)
    progress = min(1.0, (step - options.warmup_steps) / span)
    floor = options.min_lr_ratio
    return options.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_active_codebooks(batch: int, num_codebooks: int, ladder: tuple[int, ...], ladder_probability: float,
                            generator: torch.Generator) -> Tensor:
    """Codebooks per item ``[B]`` int64: a ladder count with ``ladder_probability``, else uniform in 1..K."""
    on_ladder = torch.rand(batch, generator=generator) < ladder_probability
    rungs = torch.tensor(ladder)[torch.randint(len(ladder), (batch,), generator=generator)]
    uniform = torch.randint(1, num_codebooks + 1, (batch,), generator=generator)
    return torch.where(on_ladder, rungs, uniform)


def _build_discriminator(sample_rate: int) -> nn.Module:
    from encodec.msstftd import MultiScaleSTFTDiscriminator

    scale = sample_rate / 24000  # encodec's scales are for 24 kHz
    n_ffts = [int(2 ** round(math.log2(n * scale))) for n in (1024, 2048, 512)]
    return MultiScaleSTFTDiscriminator(filters=16, n_ffts=n_ffts, hop_lengths=[n // 4 for n in n_ffts],
                                       win_lengths=n_ffts)


class _Averages:
    """Running sums of logged scalars between two log lines."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.started = time.perf_counter()

    def reset(self) -> None:
        self.sums, self.count, self.started = {}, 0, time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def pop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        result = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        result["steps_per_s"] = self.count / elapsed if elapsed > 0 else 0.0
        self.reset()
        return result


class CodecTrainer:
    """State of one training run (model, optimisers, data, step) and its step/validate/checkpoint/export.

    Driven by :func:`train_codec`.
    """

    def __init__(self, options: CodecTrainOptions) -> None:
        self.options = options
        config = options.config
        self.model = CodecModel(config)
        self.loss = MultiResolutionSpectralLoss(config.sample_rate)
        if options.freeze_tokenizer:
            for module in (self.model.encoder, self.model.quantizer):
                module.requires_grad_(False)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=options.lr, betas=(0.8, 0.99),
                                           weight_decay=options.weight_decay)
        self.discriminator: nn.Module | None = None
        self.disc_optimizer: torch.optim.Optimizer | None = None
        if options.adversarial:
            self.discriminator = _build_discriminator(config.sample_rate)
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=options.discriminator_lr,
                                                    betas=(0.8, 0.99))
        self.listing = find_listing(options.corpus, "train")
        self.clips = read_listing(self.listing, "train", config.sample_rate)
        self.sampler = CropSampler(self.clips, options.crop_samples, options.batch_size, options.seed,
                                   config.sample_rate)
        self.validation_wav = self._validation_batch()
        self.step = 0
        self.bad_steps = 0
        self.last_validation: dict[str, float] = {}

    def _validation_batch(self) -> Tensor:
        o = self.options
        try:
            clips = read_listing(find_listing(o.corpus, "dev"), "dev", o.config.sample_rate)
        except ConfigError:
            clips = self.clips  # no dev split yet: fixed crops of training audio
        sampler = CropSampler(clips, o.crop_samples, o.validation_items, seed=o.seed + 7919,
                              sample_rate=o.config.sample_rate, gain_db=(0.0, 0.0))
        return sampler.batch(0)

    # -- one step -----------------------------------------------------------------------------
    def set_training(self, training: bool) -> None:
        """Train mode for the parts that learn; a frozen tokenizer always runs in eval mode (no EMA updates)."""
        self.model.train(training)
        if self.options.freeze_tokenizer:
            self.model.encoder.eval()
            self.model.quantizer.eval()

    def load_initial_weights(self, path: Path) -> None:
        """Copy the weights of an exported codec into the model: a fine-tuning start.

        The source must have this run's architecture, except that the run's decoder stacks may be
        deeper; their extra (last) blocks start as the identity (layer scale 0).
        """
        from tokenspeech.codecs.native import load_native_codec

        source = load_native_codec(path)
        have, want = source.model.config, self.options.config
        deeper = replace(have, decoder_blocks=want.decoder_blocks, decoder_fine_blocks=want.decoder_fine_blocks)
        if deeper != want or want.decoder_blocks < have.decoder_blocks \
                or want.decoder_fine_blocks < have.decoder_fine_blocks:
            raise ConfigError(f"{path} has a different architecture ({have}) than this run ({want}); only the "
                              "decoder's block counts may grow")
        weights = {k: v.float() for k, v in source.model.state_dict().items()}
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        assert not unexpected, unexpected
        decoder = self.model.decoder
        new_blocks = [*decoder.coarse.blocks[have.decoder_blocks:], *decoder.fine.blocks[have.decoder_fine_blocks:]]
        new_keys = {f"decoder.{name}" for name, p in decoder.named_parameters()
                    if any(p is q for block in new_blocks for q in block.parameters())}
        assert set(missing) <= new_keys, sorted(set(missing) - new_keys)
        with torch.no_grad():
            for block in new_blocks:
                block.gamma.zero_()
        if new_blocks:
            logger.info("decoder grown from %d + %d to %d + %d blocks (new blocks start as the identity)",
                        have.decoder_blocks, have.decoder_fine_blocks, want.decoder_blocks, want.decoder_fine_blocks)

    def _reconstruction(self, wav: Tensor, active: Tensor) -> tuple[Any, Tensor, Tensor]:
        if self.options.freeze_tokenizer:  # no graph through the fixed encoder: a cheaper step
            with torch.no_grad():
                quantized = self.model.quantizer(self.model.encoder(wav), active)
            out = CodecOutput(self.model.decoder(quantized.quantized), quantized.codes, quantized.commitment,
                              quantized.perplexity, quantized.replaced)
        else:
            out = self.model(wav, active)
        delay = self.options.config.output_delay
        return out, out.wav[..., delay:], wav[..., :wav.shape[-1] - delay]

    def _adversarial_on(self) -> bool:
        return self.discriminator is not None and self.step >= self.options.adversarial_start

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the logged scalars."""
        o = self.options
        generator = torch.Generator().manual_seed(o.seed * 1_000_003 + self.step)
        wav = self.sampler.batch(self.step)
        active = sample_active_codebooks(wav.shape[0], o.config.num_codebooks, o.ladder, o.ladder_probability,
                                         generator)
        lr = learning_rate(o, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out, pred, target = self._reconstruction(wav, active)
        spectral = self.loss(pred, target)
        loss = o.mel_weight * spectral.mel + o.magnitude_weight * spectral.magnitude
        loss = loss + o.commitment_weight * out.commitment
        terms = {"loss": 0.0, "mel": spectral.mel.item(), "magnitude": spectral.magnitude.item(),
                 "commitment": out.commitment.item()}
        if self._adversarial_on():
            adversarial, features = self._generator_terms(pred, target)
            loss = loss + o.adversarial_weight * adversarial + o.feature_weight * features
            terms.update(adversarial=adversarial.item(), features=features.item())
        terms["loss"] = loss.item()
        if not math.isfinite(terms["loss"]):
            return self._skip_step(terms)
        self.bad_steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trained = [p for p in self.model.parameters() if p.requires_grad]
        terms["grad_norm"] = float(nn.utils.clip_grad_norm_(trained, o.grad_clip))
        self.optimizer.step()
        if self._adversarial_on():
            terms["discriminator"] = self._discriminator_step(pred.detach(), target)
        perplexity = out.perplexity
        terms.update(lr=lr, replaced=float(out.replaced), perplexity_mean=perplexity.mean().item(),
                     perplexity_first=perplexity[0].item(), perplexity_last=perplexity[-1].item())
        self.step += 1
        return terms

    def _skip_step(self, terms: dict[str, float]) -> dict[str, float]:
        self.bad_steps += 1
        logger.warning("step %d: non-finite loss %s, skipped", self.step, terms)
        if self.bad_steps >= MAX_BAD_STEPS:
            raise TokenspeechError(f"codec training diverged: {MAX_BAD_STEPS} non-finite losses in a row at step "
                                   f"{self.step}; resume from {self.options.out / CHECKPOINT_NAME} with a lower --lr")
        self.step += 1
        return {"skipped": 1.0}

    def _generator_terms(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        assert self.discriminator is not None
        fake_logits, fake_maps = self.discriminator(pred)
        with torch.no_grad():
            _, real_maps = self.discriminator(target)
        return hinge_generator_loss(fake_logits), feature_matching_loss(real_maps, fake_maps)

    def _discriminator_step(self, pred: Tensor, target: Tensor) -> float:
        assert self.discriminator is not None and self.disc_optimizer is not None
        fake_logits, _ = self.discriminator(pred)
        real_logits, _ = self.discriminator(target)
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        return loss.item()

    # -- validation, checkpoints, export --------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Spectral losses on the fixed validation batch at each ladder rung, plus codebook usage."""
        self.model.eval()
        result: dict[str, float] = {}
        for k in self.options.ladder:
            active = torch.full((self.validation_wav.shape[0],), k)
            _, pred, target = self._reconstruction(self.validation_wav, active)
            spectral = self.loss(pred, target)
            result[f"val_mel@{k}"] = spectral.mel.item()
            result[f"val_magnitude@{k}"] = spectral.magnitude.item()
        usage = self.model.quantizer.usage()
        result.update(codebook_usage_mean=usage.mean().item(), codebook_usage_min=usage.min().item())
        self.set_training(True)
        self.last_validation = result
        return result

    def checkpoint(self) -> Path:
        path = self.options.out / CHECKPOINT_NAME
        state = {
            "format_version": CHECKPOINT_VERSION, "step": self.step, "options": self.options.to_json(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "disc_optimizer": self.disc_optimizer.state_dict() if self.disc_optimizer is not None else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "last_validation": self.last_validation,
        }
        tmp = path.with_name(f".{path.name}.partial")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def restore(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format_version") != CHECKPOINT_VERSION:
            raise ConfigError(f"{path}: checkpoint format {state.get('format_version')!r} is not {CHECKPOINT_VERSION}")
        saved = CodecConfig.from_json(state["options"]["config"])
        if saved != self.options.config:
            raise ConfigError(f"{path} was trained with a different architecture ({saved}); resume with the same "
                              "configuration or start a new --out folder")
        if bool(state["options"].get("freeze_tokenizer", False)) != self.options.freeze_tokenizer:
            raise ConfigError(f"{path}: --freeze-tokenizer must match the run being resumed")
        if (state["discriminator"] is None) != (self.discriminator is None):
            raise ConfigError(f"{path}: --adversarial must match the run being resumed")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.discriminator is not None and self.disc_optimizer is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        self.step = int(state["step"])
        self.last_validation = state.get("last_validation", {})

    def export(self) -> tuple[Path, Path]:
        o = self.options
        hours = sum(c.duration for c in self.clips) / 3600
        card_extra = {
            "training": {"listing": str(self.listing), "clips": len(self.clips), "hours": round(hours, 3),
                         "steps": self.step, "options": o.to_json()},
            "metrics": {"step": self.step, **self.last_validation},
        }
        return save_native_codec(self.model, o.config, o.out / f"{NAME}.safetensors", card_extra)


class _Log:
    """``train_log.jsonl`` plus stdout; on resume, drops lines from beyond the checkpoint."""

    def __init__(self, path: Path, resumed_step: int) -> None:
        self.path = path
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        logger.info("%s", shown)


def _prepare(options: CodecTrainOptions) -> CodecTrainer:
    options.out.mkdir(parents=True, exist_ok=True)
    checkpoint = options.out / CHECKPOINT_NAME
    if checkpoint.exists() and not options.resume:
        raise ConfigError(f"{options.out} already holds a run ({checkpoint}); pass --resume to continue it or "
                          "choose another --out")
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed)
    trainer = CodecTrainer(options)
    if options.resume and checkpoint.exists():
        trainer.restore(checkpoint)
        logger.info("resumed from %s at step %d", checkpoint, trainer.step)
    else:
        if options.resume:
            logger.warning("no checkpoint in %s: starting a new run", options.out)
        if options.init_from is not None:
            trainer.load_initial_weights(options.init_from)
            logger.info("initialised from %s%s", options.init_from,
                        " (encoder and codebooks frozen)" if options.freeze_tokenizer else "")
    return trainer


def train_codec(options: CodecTrainOptions) -> CodecTrainResult:
    """Train (or resume training) tscodec to ``options.steps``; see the module docstring."""
    trainer = _prepare(options)
    log = _Log(options.out / LOG_NAME, trainer.step)
    logger.info("training %s: %d clips from %s, %d params, step %d -> %d", NAME, len(trainer.clips),
                trainer.listing, sum(p.numel() for p in trainer.model.parameters()), trainer.step, options.steps)
    trainer.set_training(True)
    limit = options.time_limit_minutes
    deadline = None if limit is None else time.monotonic() + 60 * limit
    averages = _Averages()
    last: dict[str, Any] = {}
    with stop_requests() as stop:
        while trainer.step < options.steps:
            averages.add(trainer.train_step())
            step = trainer.step
            ending = (deadline is not None and time.monotonic() > deadline) or stop.requested
            if step % options.log_interval == 0 or step == options.steps or ending:
                last = {"step": step, **averages.pop()}
                log.write(last)
            if step % options.checkpoint_interval == 0 or step == options.steps or ending:
                log.write({"step": step, **trainer.validate()})
                trainer.checkpoint()
            if ending:
                reason = stop.signal_name or f"time limit of {limit:g} min reached"
                logger.warning("%s at step %d of %d; resume with --resume", reason, step, options.steps)
                break
            if step % options.export_interval == 0 and step < options.steps:
                trainer.export()
    weights, card = trainer.export()
    return CodecTrainResult(trainer.step, weights, card, last, trainer.last_validation)

