"""Turn text into speech.

Examples:
  tokenspeech synthesize "Hello there. How are you today?" -o hello.wav
  tokenspeech synthesize --text-file story.txt -o story.wav --voice espeak-us
  tokenspeech synthesize "Read this quickly." -o fast.wav --rate 1.4 --seed 7
  tokenspeech synthesize "Low latency, please." -o live.wav --decoder semiar --stream
  tokenspeech synthesize "Straight to the speaker." -o - --stream | aplay -q -f S16_LE -r 16000 -c 1

Voices: joe (default), espeak-us, espeak-gb-f (the model card lists them;
an unknown name is reported with the valid ones).

Decoders:
  nar     masked iterative decoding of each sentence in --steps passes (default 3),
          each with classifier-free guidance 2 (--guidance 0 turns it off);
          fastest offline.
  semiar  blocks of 16 frames (640 ms), each conditioned on the earlier ones:
          codebook 1 in --steps greedy passes (default 1; --temperature 0, the
          others sample at 0.8), then codebooks 2-6 in one pass with guidance 2
          (--fine-guidance; --steps 3 is a little clearer for 1.6x the CPU);
          with --stream the first audio comes after the first block.
  ar      the codec language model samples frame by frame (KV cache); slowest.

Output: a 16 kHz WAV (or .flac/.ogg by suffix). With --stream the audio is
appended to the WAV as it is produced (the header is fixed up at the end);
"-o -" writes raw 16-bit little-endian mono PCM to stdout instead.
The same --seed gives the same audio. Long text is split into sentences;
at most 5000 characters per call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tokenspeech.precisions import PRECISIONS

DECODER_CHOICES = ("nar", "semiar", "ar")  # checked against tokenspeech.tts.pipeline.DECODERS in the tests


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="the text to speak (or use --text-file)")
    parser.add_argument("-o", "--output", required=True, help="output audio file (.wav, .flac, .ogg) or - for raw PCM")
    parser.add_argument("--text-file", type=Path, help="read the text from this file (- for stdin)")
    parser.add_argument("--voice", default="joe", help="voice name (default: joe)")
    parser.add_argument("--decoder", default="nar", choices=DECODER_CHOICES, help="decoding family (default: nar)")
    parser.add_argument("--steps", type=int, default=None,
                        help="first-codebook passes (per block for semiar); default 3 (nar), 1 (semiar)")
    parser.add_argument("--rate", type=float, default=1.0, help="speaking rate, 0.5..2 (2 = twice as fast)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same audio")
    parser.add_argument("--temperature", type=float, default=None,
                        help="first-codebook sampling temperature, 0..2 (0 = greedy; default 0.8 for nar and ar, "
                             "0 for semiar)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (0 = off; default 2 for nar and ar, 0 for semiar: "
                             "guidance doubles the masked model passes)")
    parser.add_argument("--fine-guidance", type=float, default=None,
                        help="guidance of the one pass that predicts codebooks 2..6 from codebook 1, apart from "
                             "--guidance (default 2 for semiar; otherwise as --guidance); costs one model pass "
                             "per block or sentence")
    parser.add_argument("--stream", action="store_true", help="write audio as it is produced")
    parser.add_argument("--model", type=Path, default=None, help="TTS model (.safetensors; default: shipped)")
    parser.add_argument("--codec", type=Path, default=None, help="tscodec model (default: shipped)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="matrix products of the TTS model and codec: fp32 (default), bf16 (bfloat16: faster "
                             "on CPUs with AVX512-BF16 or AMX, audio differs slightly), or auto (bf16 where the "
                             "CPU has it)")
    parser.set_defaults(run=run)


def _read_text(args: argparse.Namespace) -> str:
    from tokenspeech.errors import ConfigError

    if (args.text is None) == (args.text_file is None):
        raise ConfigError("give the text either as an argument or with --text-file, not both")
    if args.text_file is None:
        return args.text
    if str(args.text_file) == "-":
        return sys.stdin.read()
    try:
        return args.text_file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read --text-file {args.text_file}: {error.strerror or error}") from error


def _options(args: argparse.Namespace):  # -> SynthesisOptions
    from dataclasses import replace

    from tokenspeech.tts.pipeline import SynthesisOptions

    options = SynthesisOptions(voice=args.voice, decoder=args.decoder, steps=args.steps, rate=args.rate,
                               seed=args.seed)
    overrides = {k: v for k, v in (("temperature", args.temperature), ("guidance", args.guidance),
                                   ("fine_guidance", args.fine_guidance)) if v is not None}
    return replace(options, **overrides)


def _write_stream(synth, text: str, options, output: str) -> float:
    import wave

    seconds = 0.0
    if output == "-":
        for chunk in synth.stream(text, options):
            sys.stdout.buffer.write(chunk.pcm16)
            sys.stdout.buffer.flush()
            seconds += chunk.audio.shape[0] / chunk.sample_rate
        return seconds
    chunks = synth.stream(text, options)  # text and option errors surface here, before the file exists
    with wave.open(output, "wb") as handle:  # wave patches the header sizes on close
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(synth.sample_rate)
        for chunk in chunks:
            handle.writeframes(chunk.pcm16)
            seconds += chunk.audio.shape[0] / chunk.sample_rate
    return seconds


def run(args: argparse.Namespace) -> int:
    from tokenspeech.audio import save_audio
    from tokenspeech.errors import ConfigError
    from tokenspeech.tts.pipeline import Synthesizer

    text = _read_text(args)
    options = _options(args)
    if args.stream and args.output != "-" and Path(args.output).suffix.lower() != ".wav":
        raise ConfigError("--stream writes WAV files (or raw PCM with -o -); use an output name ending in .wav")
    synth = Synthesizer.load(args.model, args.codec, args.precision)
    started = time.perf_counter()
    if args.stream:
        seconds = _write_stream(synth, text, options, args.output)
    else:
        result = synth.synthesize(text, options)
        seconds = result.seconds
        if args.output == "-":
            from tokenspeech.tts.pipeline import to_pcm16

            sys.stdout.buffer.write(to_pcm16(result.audio))
        else:
            save_audio(args.output, result.audio, result.sample_rate)
    elapsed = time.perf_counter() - started
    print(f"{args.output}: {seconds:.2f} s of audio in {elapsed:.2f} s (RTF {elapsed / max(seconds, 1e-9):.3f}); "
          f"voice {options.voice}, decoder {options.decoder}, seed {options.seed}", file=sys.stderr)
    return 0
