"""Train tokenspeech models on CPU (or whatever torch finds).

Recipes:
  codec   tscodec, our streaming 16 kHz codec (25 Hz frames, 24 x 1024 RVQ:
          1.5 / 3 / 6 kbps from one model)
  asr     the speech recogniser (see `tokenspeech train asr --help`)
  tts     the speech synthesizer (see `tokenspeech train tts --help`)
  lm      the character LM of CTC beam search (see `tokenspeech train lm --help`)

Examples:
  tokenspeech train codec --corpus /work/corpus --out runs/codec --steps 9000 --threads 2
  tokenspeech train codec --corpus /work/corpus --out runs/codec --resume      # continue after a stop
  tokenspeech train codec --corpus corpus/done.jsonl --out /tmp/smoke --steps 50 --batch-size 4
  # fine-tune a deeper decoder on the shipped codec's tokens (the tokens stay the same)
  tokenspeech train codec --corpus /work/corpus --out runs/codec-deep --steps 6000 \
      --init-from tokenspeech/assets/tscodec.safetensors --freeze-tokenizer --decoder-blocks 12

A run folder holds train_log.jsonl (losses, steps/s, validation), last.pt (the
checkpoint, rewritten every --checkpoint-interval steps) and
tscodec.safetensors + tscodec.json (the exported codec; copy both into
tokenspeech/assets/ to make it the default). Options left out take the
recipe's defaults (tokenspeech.training.codec.CodecTrainOptions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenspeech.training.flags import Flag, add_flags, given_options

# CLI flag -> CodecTrainOptions field, for the optional numeric/boolean flags.
_CODEC_FLAGS: tuple[Flag, ...] = (
    ("--steps", int, "total optimiser steps (a resumed run stops at the same total)"),
    ("--batch-size", int, "crops per step"),
    ("--crop-seconds", float, "length of each crop, rounded down to whole 40 ms frames"),
    ("--lr", float, "peak learning rate (AdamW)"),
    ("--warmup-steps", int, "linear warm-up steps"),
    ("--threads", int, "torch CPU threads"),
    ("--seed", int, "seed of batches, quantizer dropout and initialisation"),
    ("--log-interval", int, "steps between log lines"),
    ("--checkpoint-interval", int, "steps between validations + checkpoints (last.pt)"),
    ("--export-interval", int, "steps between exports of tscodec.safetensors"),
    ("--adversarial-start", int, "step at which the discriminator switches on (with --adversarial)"),
    ("--time-limit-minutes", float, "stop cleanly (validate, checkpoint, export) after this wall time; Ctrl-C or SIGTERM stops the same way"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    recipes = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    codec = recipes.add_parser("codec", help="train tscodec", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    codec.add_argument("--corpus", type=Path, required=True,
                       help="corpus folder (train.jsonl, else done.jsonl) or a JSONL listing")
    codec.add_argument("--out", type=Path, required=True, help="run folder")
    add_flags(codec, _CODEC_FLAGS)
    codec.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    codec.add_argument("--adversarial", action="store_true", default=None,
                       help="add MS-STFT discriminator losses (slow on CPU: ~10x per step)")
    codec.add_argument("--init-from", type=Path, default=None,
                       help="start a new run from exported codec weights (e.g. tokenspeech/assets/tscodec.safetensors)")
    codec.add_argument("--freeze-tokenizer", action="store_true", default=None,
                       help="with --init-from: train only the decoder; tokens (and TTS models trained on them) "
                            "stay valid")
    codec.add_argument("--decoder-blocks", type=int, default=None,
                       help="ConvNeXt blocks of the decoder's 25 Hz stack (default 8); with --init-from this may "
                            "exceed the source codec's: the extra blocks start as the identity. Give it again "
                            "with --resume")
    codec.add_argument("--decoder-fine-blocks", type=int, default=None,
                       help="ConvNeXt blocks of the decoder's 100 Hz stack (default 2); grows like --decoder-blocks")
    codec.set_defaults(run=run_codec)
    from tokenspeech.training.asr_cli import configure_asr  # argparse-only module

    configure_asr(recipes)
    from tokenspeech.training.tts_cli import configure_tts  # argparse-only module

    configure_tts(recipes)
    lm = recipes.add_parser(
        "lm", help="train the language model the ASR searches fuse (seconds, no torch)",
        description="Count the n-grams of the corpus's training transcripts (dev, test and held-out sentences "
                    "stay unseen) into interpolated Witten-Bell LMs for the ASR's character vocabulary: a "
                    "character n-gram and, by default, a word n-gram read through its lexicon and mixed with it "
                    "(the searches ask both for the next character). "
                    "Example: tokenspeech train lm --corpus /work/corpus --source-text --out tokenspeech/assets/asr_lm.npz",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    lm.add_argument("--corpus", type=Path, required=True, help="corpus folder (train.jsonl) or a JSONL manifest")
    lm.add_argument("--out", type=Path, required=True, help="the LM file to write (.npz)")
    lm.add_argument("--order", type=int, default=6, help="character n-gram order (characters of history + 1)")
    lm.add_argument("--word-order", type=int, default=3,
                    help="word n-gram order (words of history + 1); 0 writes the character LM alone")
    lm.add_argument("--mix", type=float, default=0.95,
                    help="share of the word model in each next-character distribution while the word so far "
                         "starts a lexicon word (the character model has the rest, and all of it outside)")
    lm.add_argument("--source-text", action="store_true",
                    help="also train on every sentence of the corpus's text sources that its seed puts in the "
                         "train split, synthesised or not (dev, test and held-out sentences stay unseen)")
    lm.set_defaults(run=run_lm)


def run_codec(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tokenspeech.models.codec import CodecConfig
    from tokenspeech.training.codec import CodecTrainOptions, train_codec

    given = given_options(args, _CODEC_FLAGS, adversarial=args.adversarial, init_from=args.init_from,
                          freeze_tokenizer=args.freeze_tokenizer)
    depth = {name: value for name, value in (("decoder_blocks", args.decoder_blocks),
                                             ("decoder_fine_blocks", args.decoder_fine_blocks)) if value is not None}
    if depth:
        given["config"] = replace(CodecConfig(), **depth)
    options = CodecTrainOptions(corpus=args.corpus, out=args.out, resume=args.resume, **given)
    result = train_codec(options)
    print(f"trained {result.steps} steps; codec written to {result.weights} and {result.card}")
    return 0


def run_lm(args: argparse.Namespace) -> int:
    from tokenspeech.asr.lm import train_lm
    from tokenspeech.decoding.word_lm import WordLexiconLM
    from tokenspeech.errors import ConfigError
    from tokenspeech.text.vocab import character_vocabulary

    if not 1 <= args.order <= 8:
        raise ConfigError("--order must be between 1 and 8")
    if not 0 <= args.word_order <= 4:
        raise ConfigError("--word-order must be between 0 (no word model) and 4")
    if not 0 <= args.mix < 1:
        raise ConfigError("--mix must be in [0, 1)")
    lm = train_lm(args.corpus, args.out, character_vocabulary(), args.order, source_text=args.source_text,
                  word_order=args.word_order, mix=args.mix)
    size = f"written to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)"
    if isinstance(lm, WordLexiconLM):
        print(f"trained a {lm.order}-gram word LM ({lm.info['lexicon']} words in its lexicon, {lm.info['words']} "
              f"running words, {lm.info['sentences']} sentences) over a {lm.char_lm.order}-gram character LM; {size}")
    else:
        print(f"trained a {lm.order}-gram character LM on {lm.info['sentences']} sentences "
              f"({lm.info['characters']} characters); {size}")
    return 0
