"""Entry point: ``tokenspeech <command>``.

Each command lives next to the code it drives, in a module that exposes
``configure(parser)`` and ``run(args) -> int``. Those modules import only
argparse-level things at the top, so ``tokenspeech --help`` stays fast and
never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from tokenspeech.errors import TokenspeechError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "codec": ("tokenspeech.codecs.cli", "encode and decode audio tokens"),
    "data": ("tokenspeech.data.cli", "build and inspect the synthetic speech corpus"),
    "eval": ("tokenspeech.eval.cli", "word error rate, intelligibility judge, codec metrics"),
    "export": ("tokenspeech.export.cli", "export models to ONNX with a manifest for tokenspeech.runtime"),
    "g2p": ("tokenspeech.text.cli", "normalise English text and show its phonemes"),
    "serve": ("tokenspeech.serving.cli", "gRPC server: our streaming API and a Riva-compatible one"),
    "synthesize": ("tokenspeech.tts.cli", "text to speech (AR, NAR or semi-AR streaming decoding)"),
    "train": ("tokenspeech.training.cli", "train the codec, ASR and TTS models (resumable)"),
    "transcribe": ("tokenspeech.asr.cli", "transcribe audio files in batch"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenspeech",
        description="Speech generation and recognition on discrete audio tokens.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except TokenspeechError as error:
        print(f"tokenspeech {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
