"""``tokenspeech train tts``: the TTS recipe (codes -> aligner -> durations -> model), resumable.

Examples:
  tokenspeech train tts --corpus /work/corpus --codec runs/codec/tscodec.safetensors --out runs/tts
  tokenspeech train tts --corpus /work/corpus --codec runs/codec/tscodec.safetensors --out runs/tts --resume
  tokenspeech train tts --corpus tests/fixtures/corpus --out /tmp/tts-smoke --steps 20 --aligner-steps 20

The run folder holds cache/ (codec codes, durations, meta.json; computed once
and reused), aligner.pt, train_log.jsonl, last.pt (checkpoint) and
tts.safetensors + tts.json (the exported model; copy both into
tokenspeech/assets/ to make it the default). Options left out take the
recipe's defaults (tokenspeech.training.tts.TtsTrainOptions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenspeech.training.flags import Flag, add_flags, given_options

# CLI flag -> TtsTrainOptions field, for the optional numeric flags.
_FLAGS: tuple[Flag, ...] = (
    ("--steps", int, "TTS optimiser steps (a resumed run stops at the same total)"),
    ("--stop-at", int, "stop (checkpointed) at this step this time; --resume continues to --steps"),
    ("--time-limit-minutes", float, "stop the TTS phase after this wall time (checkpointed; --resume continues); Ctrl-C or SIGTERM stops the same way"),
    ("--aligner-steps", int, "aligner optimiser steps (phase 2)"),
    ("--codebooks", int, "codec codebooks to model (6 = 1.5 kbps with tscodec)"),
    ("--max-batch-frames", int, "padded 25 Hz frames per batch"),
    ("--max-seconds", float, "skip utterances longer than this"),
    ("--lr", float, "peak learning rate (AdamW)"),
    ("--warmup", int, "linear warm-up steps"),
    ("--threads", int, "torch CPU threads"),
    ("--seed", int, "seed of batches, masks and initialisation"),
    ("--log-interval", int, "steps between log lines"),
    ("--checkpoint-interval", int, "steps between dev evaluations + checkpoints (last.pt)"),
    ("--export-interval", int, "steps between exports of tts.safetensors"),
)
_FIELDS = {"--log-interval": "log_every", "--checkpoint-interval": "checkpoint_every",
           "--export-interval": "export_every"}


def configure_tts(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tts`` recipe to ``tokenspeech train``'s subparsers; returns its parser."""
    parser = subparsers.add_parser("tts", help="train the TTS model (aligner, durations, AR/NAR/semi-AR)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True,
                        help="corpus folder (train.jsonl + dev.jsonl, else done.jsonl) or a JSONL listing")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--codec", type=Path, default=None, help="tscodec weights (default: the shipped codec)")
    parser.add_argument("--voices", default=None, help="comma-separated voices (default: joe,espeak-us,espeak-gb-f)")
    add_flags(parser, _FLAGS)
    parser.add_argument("--frame-layers", type=int, default=None,
                        help="transformer layers over the frame conditioning (run once per sentence; default: the "
                             "--init-from model's, else 0); with --init-from they may be added to a model trained "
                             "without them")
    parser.add_argument("--stage-weights", default=None, metavar="W1,W2,...",
                        help="relative weights of the training stages, one per codebook (stage k: codebooks before "
                             "k given, codebook k partly masked, later ones hidden); e.g. 3,3,1,1,1,1 trains "
                             "codebook 2 given codebook 1 three times as often as the default 5,1,1,1,1,1")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    parser.add_argument("--bf16", action="store_true",
                        help="TTS phase: forward and backward passes under bfloat16 autocast (weights, optimiser "
                             "and losses stay float32): faster on CPUs with AVX512-BF16 or AMX, slower elsewhere")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="new run starting from exported weights (e.g. tokenspeech/assets/tts.safetensors) at "
                             "the step they were exported at; the optimiser starts afresh")
    parser.set_defaults(run=run_tts)
    return parser


def run_tts(args: argparse.Namespace) -> int:
    from tokenspeech.errors import ConfigError
    from tokenspeech.models.tts import TtsConfig
    from tokenspeech.training.tts import MaskingOptions, TtsTrainOptions, train_tts
    from tokenspeech.tts.model_io import read_tts_card

    voices = tuple(v.strip() for v in args.voices.split(",") if v.strip()) if args.voices else None
    given = given_options(args, _FLAGS, _FIELDS, voices=voices)
    frame_layers = args.frame_layers
    if frame_layers is None and args.init_from is not None:
        frame_layers = int(read_tts_card(args.init_from).get("config", {}).get("frame_layers", 0))
    if frame_layers is not None:
        if frame_layers < 0:
            raise ConfigError(f"--frame-layers must be >= 0, got {frame_layers}")
        # the phoneme and voice counts are placeholders: the recipe fills them in from the data
        given["model"] = TtsConfig(num_phonemes=1, num_voices=1, frame_layers=frame_layers)
    if args.stage_weights:
        given["masking"] = MaskingOptions(stage_weights=_numbers(args.stage_weights, "--stage-weights"))
    options = TtsTrainOptions(corpus=args.corpus, out=args.out, codec=args.codec, resume=args.resume,
                              init_from=args.init_from, bf16=args.bf16, **given)
    result = train_tts(options)
    print(f"trained {result.steps} steps; model written to {result.weights} and {result.card}")
    return 0


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    from tokenspeech.errors import ConfigError

    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, got {text!r}") from None
