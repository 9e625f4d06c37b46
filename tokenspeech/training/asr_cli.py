"""``tokenspeech train asr``: argparse -> :class:`AsrTrainOptions` -> :func:`train_asr`.

Wire it in with ``configure_asr(subparsers)`` where ``subparsers`` belongs to
the ``train`` command; the parser's ``run`` default runs the training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tokenspeech.asr.base import DECODERS


def configure_asr(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``asr`` sub-command to ``subparsers``; returns its parser."""
    parser = subparsers.add_parser("asr", help="train the speech recogniser (CTC, Paraformer, AR, semi-AR heads)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="folder with train.jsonl and dev.jsonl (else done.jsonl, split by its split field)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: last.pt, train_log.jsonl, asr.*")
    parser.add_argument("--steps", type=int, default=1800, help="total optimisation steps (the LR schedule)")
    parser.add_argument("--stop-at-step", type=int, default=None, help="end this process early; --resume later")
    parser.add_argument("--time-limit-minutes", type=float, default=None, help="end after this wall time, checkpointed (Ctrl-C or SIGTERM stops the same way)")
    parser.add_argument("--max-batch-seconds", type=float, default=120.0, help="padded audio per batch")
    parser.add_argument("--max-utterance-seconds", type=float, default=20.0,
                        help="leave longer training utterances out (a short first phase, then --resume with more, "
                             "is a length curriculum)")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start a new run from exported weights (e.g. tokenspeech/assets/asr.safetensors) at "
                             "the step they were exported at; sizes, decoders and symbols come from its card, "
                             "the optimiser starts afresh and ramps up over --warmup steps; --steps is the total")
    parser.add_argument("--restart-schedule", action="store_true",
                        help="with --init-from: start a new learning-rate cycle at the init step (warm-up to --lr, "
                             "cosine decay to 5%% at --steps) instead of staying on the schedule of a run from step 0, "
                             "whose rate is small that late; give it again with --resume")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma list; ctc is always trained")
    parser.add_argument("--dim", type=int, default=None, help="model size (default: AsrModelConfig's)")
    parser.add_argument("--encoder-layers", type=int, default=None, help="model size (default: AsrModelConfig's)")
    parser.add_argument("--decoder-layers", type=int, default=None, help="model size (default: AsrModelConfig's)")
    parser.add_argument("--ar-layers", type=int, default=None, help="model size (default: AsrModelConfig's)")
    parser.add_argument("--heads", type=int, default=None, help="model size (default: AsrModelConfig's)")
    parser.add_argument("--ctc-warmup-steps", type=int, default=300,
                        help="train the encoder with the CTC heads alone (full context) until this step; the "
                             "decoder losses otherwise keep CTC on its blank plateau for over 1,000 steps")
    parser.add_argument("--full-context-prob", type=float, default=0.5,
                        help="share of steps whose encoder sees the whole utterance; the others train streaming "
                             "with chunks of 2-16 frames (default 0.5). Higher favours the offline decoders")
    parser.add_argument("--bf16", action="store_true",
                        help="run forward and backward passes under bfloat16 autocast (matrix products and "
                             "convolutions in bf16; weights, optimiser and losses stay float32): faster on CPUs "
                             "with AVX512-BF16 or AMX, emulated and slower elsewhere")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--export-every", type=int, default=500)
    parser.add_argument("--eval-utterances", type=int, default=40)
    parser.add_argument("--no-augment", action="store_true", help="train on clean audio only")
    parser.add_argument("--vtlp-prob", type=float, default=0.0,
                        help="share of utterances whose mel filterbank is warped by a factor in 0.9-1.1 "
                             "(vocal-tract-length perturbation: formants move, pitch and tempo stay; "
                             "aimed at voices unseen in training). Default 0: off")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_asr)
    return parser


def _options(args: argparse.Namespace):
    from tokenspeech.training.asr import AsrTrainOptions
    from tokenspeech.training.augment import AugmentOptions

    decoders = tuple(dict.fromkeys(["ctc"] + [d.strip() for d in args.decoders.split(",") if d.strip()]))
    from tokenspeech.models.asr import AsrModelConfig

    sizes = {"dim": args.dim, "heads": args.heads, "encoder_layers": args.encoder_layers,
             "decoder_layers": args.decoder_layers, "ar_layers": args.ar_layers}
    if args.init_from is not None and any(v is not None for v in sizes.values()):
        from tokenspeech.errors import ConfigError

        raise ConfigError("--init-from takes the model size from its card; drop --dim/--heads/--*-layers")
    model = AsrModelConfig(decoders=decoders, **{k: v for k, v in sizes.items() if v is not None})
    return AsrTrainOptions(
        corpus=args.corpus, out=args.out, steps=args.steps, stop_at_step=args.stop_at_step,
        time_limit_minutes=args.time_limit_minutes, max_batch_seconds=args.max_batch_seconds,
        max_utterance_seconds=args.max_utterance_seconds, lr=args.lr,
        warmup=args.warmup, threads=args.threads, resume=args.resume, model=model,
        augment=AugmentOptions.none() if args.no_augment else AugmentOptions(vtlp_prob=args.vtlp_prob),
        ctc_warmup_steps=args.ctc_warmup_steps, checkpoint_every=args.checkpoint_every, export_every=args.export_every,
        eval_utterances=args.eval_utterances, seed=args.seed, init_from=args.init_from,
        restart_schedule=args.restart_schedule, full_context_prob=args.full_context_prob,
        bf16=args.bf16)


def run_asr(args: argparse.Namespace) -> int:
    """Entry point of ``train asr``; prints the JSON summary on stdout."""
    from tokenspeech.training.asr import train_asr

    training_logger = logging.getLogger("tokenspeech.training")
    if not training_logger.handlers:  # progress goes to stdout (the root handler, if any, writes stderr)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        training_logger.addHandler(handler)
        training_logger.setLevel(logging.INFO)
        training_logger.propagate = False
    summary = train_asr(_options(args))
    print(json.dumps(summary))
    return 0
