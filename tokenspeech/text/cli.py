"""Show what the text front-end makes of English text.

examples:
  tokenspeech g2p "Dr. Smith paid $3.50 on May 1st, 1990."
  echo "It's 5:30." | tokenspeech g2p -

Prints the spoken form, the ASR transcript form and the espeak-ng phonemes.
"""

from __future__ import annotations

import argparse
import sys


def _run(args: argparse.Namespace) -> int:
    from tokenspeech.errors import TextError
    from tokenspeech.text.g2p import EspeakPhonemizer
    from tokenspeech.text.normalize import normalize_text, transcript_form

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise TextError("no text given")
    spoken = normalize_text(text)
    print(f"spoken:     {spoken}")
    print(f"transcript: {transcript_form(spoken)}")
    print(f"phonemes:   {EspeakPhonemizer(args.voice).phonemize(spoken)}")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="text to analyse, or - to read standard input")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice used for phonemes")
    parser.set_defaults(run=_run)
