"""Transcribe audio files in batch, with word timings, resumable.

INPUTS can be audio files, folders (searched recursively for .wav .flac .ogg
.opus .mp3 .m4a .aac .webm .mp4 ... ; hidden entries skipped), globs (quote
them; ** recurses; only files with audio extensions), @LIST (a text file with
one such input per line, relative to the current folder; blank lines and #
comments skipped) and .jsonl manifests (one JSON object per line: "path",
relative to the manifest's folder, optional "id" and "text"). Each result's
"path" is the input exactly as written (as typed, as found under the folder
you gave, or as in the list/manifest). The same file named twice is
transcribed once.

Files are sorted longest first and batched by count (--batch-size) and total
audio seconds (--batch-seconds); the next batch is decoded on --workers
threads while the model runs. Recordings longer than the model accepts are
cut at pauses (energy VAD) and the segments' words stitched back with times
from the start of the file. Results are written as files finish, so they are
in processing order, not input order.

Output (-o OUT; the format defaults from OUT's suffix, else jsonl; without -o
results go to stdout):
  jsonl  one line per input: {"path", "id"*, "text", "duration", "words":
         [{"word", "start", "end"}], "error", "reference"*}; error is null or
         the reason the file failed (*: only with a manifest's id/text).
  txt    one line per transcribed file: PATH<TAB>TEXT (cut -f2 for the text).
         Failed files are listed in the summary only.
  srt, vtt
         SubRip / WebVTT subtitles, cues of at most 7 s and 42 characters.
         One input: OUT is the file (stdout without -o). Several inputs: OUT
         is a folder (existing, ending in / or without a suffix) receiving
         one subtitle file per input, named after the input's path as
         written (leading / and .. dropped, suffix replaced: episodes/e1.mp4
         -> OUT/episodes/e1.vtt). Failed files get no subtitle file.

Decoders: ctc (default) searches 16 hypotheses with the shipped language
model (tokenspeech/assets/asr_lm.npz: a word trigram over the training text
read through its 41,000-word lexicon, mixed with a character 6-gram for the
other words; it spells what the acoustics only suggest); --no-lm decodes
greedily, --lm FILE takes one from `tokenspeech train lm`. ar runs the
attention decoder token by token in a beam of 4, scored jointly with the CTC
head (which stops it from skipping or repeating phrases) and the same LM.
paraformer decodes every character in one parallel pass, then a beam of 8
over its positions re-ranks the likeliest characters with the same LM and the
CTC head's prefix scores (the pass's length is kept; a space costs a little
extra, or the LM splits words). semiar (chunked, as in streaming) uses no LM.

A bad file (missing, unreadable, empty, silent, longer than --max-duration)
gets a result with its reason and never stops the batch. A summary (files
ok/failed, audio hours, wall time, speed, each failure and why) goes to
stderr at the end.

An existing OUT is refused unless you add --resume or --overwrite. JSONL and
txt results are appended and synced one complete line at a time: after a crash
or Ctrl-C, --resume drops a half-written last line and skips the inputs OUT
already holds (matched by "path"), so nothing is lost or duplicated. Failed
rows count as done too; --retry-failed removes them and tries those files
again. Subtitle folders resume by skipping inputs whose file exists.

Exit status:
  0    every input has a transcript (including inputs done by an earlier run)
  1    some inputs failed (now or in the resumed run); the rest are written
  2    usage or configuration error: no input matched, bad option, OUT
       exists without --resume/--overwrite, model missing
  130  interrupted (Ctrl-C); everything finished so far is kept

Examples:
  tokenspeech transcribe talk.wav
  tokenspeech transcribe talk.wav --no-lm
  tokenspeech transcribe recordings/ -o results.jsonl --decoder paraformer
  tokenspeech transcribe 'calls/**/*.flac' @more.txt -o calls.txt --workers 4
  tokenspeech transcribe corpus/test.jsonl -o hyp.jsonl --resume
  tokenspeech transcribe lecture.mp4 -o lecture.srt
  tokenspeech transcribe episodes/ --format vtt -o subtitles/
"""

from __future__ import annotations

import argparse
import sys

from tokenspeech.asr.base import DECODERS
from tokenspeech.precisions import PRECISIONS


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``transcribe`` options to ``parser``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, folder, glob, @LIST or manifest.jsonl")
    parser.add_argument("-o", "--output", metavar="OUT", help="results file or subtitle folder (default: stdout)")
    parser.add_argument("--format", choices=("jsonl", "txt", "srt", "vtt"), help="default: from OUT's suffix, else jsonl")
    parser.add_argument("--decoder", choices=DECODERS, default="ctc", help="decoding strategy (default: ctc)")
    parser.add_argument("--model", metavar="PATH", help="ASR weights (default: the shipped model)")
    parser.add_argument("--lm", metavar="PATH", default=None,
                        help="language model fused into the ctc, ar and paraformer searches "
                             "(default: the shipped word + character model, "
                             "tokenspeech/assets/asr_lm.npz; train one with `tokenspeech train lm`)")
    parser.add_argument("--no-lm", action="store_true",
                        help="decode without a language model (ctc, paraformer: greedy)")
    parser.add_argument("--beam", type=int, default=None, metavar="N",
                        help="beam size of ctc, ar and paraformer (default: ctc 16 and paraformer 8 with the LM, "
                             "else 1 = greedy; ar 4)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="most files per batch (default: 16)")
    parser.add_argument("--batch-seconds", type=float, default=240.0, metavar="S",
                        help="most audio seconds per batch (default: 240)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="threads decoding audio ahead of the model (default: 2)")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads for the model (0: automatic)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the model's large matrix products: fp32 (default), bf16 (bfloat16: faster on CPUs "
                             "with AVX512-BF16 or AMX, text may differ slightly) or auto (bf16 where the CPU has it)")
    parser.add_argument("--max-duration", type=float, default=4 * 3600.0, metavar="S",
                        help="longer files are reported as failed, not loaded (default: 14400)")
    parser.add_argument("--resume", action="store_true", help="continue OUT, skipping inputs it already holds")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume: transcribe failed rows again")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``tokenspeech transcribe``: returns the exit status from the table above."""
    from tokenspeech.asr import batch, inputs, output
    from tokenspeech.errors import ConfigError

    options = batch.BatchOptions(batch_size=args.batch_size, batch_seconds=args.batch_seconds, workers=args.workers,
                                 max_file_seconds=args.max_duration, progress=not args.no_progress)
    options.validate()
    if args.beam is not None and args.beam < 1:
        raise ConfigError("--beam must be at least 1")
    fmt = output.resolve_format(args.format, args.output)
    audio_inputs = inputs.expand_inputs(args.inputs)
    sink = output.open_sink(args.output, fmt, audio_inputs,
                            output.OutputOptions(args.resume, args.overwrite, args.retry_failed))
    try:
        recognizer = batch.make_recognizer(args.decoder, args.model, args.threads,
                                           "none" if args.no_lm else args.lm, args.beam, precision=args.precision)
        report = batch.transcribe_files(audio_inputs, recognizer, sink, options)
    finally:
        sink.close()
    print(batch.format_summary(report, args.output), file=sys.stderr)
    return report.exit_status
