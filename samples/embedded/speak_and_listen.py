"""Synthesize a sentence and transcribe it back with nothing but onnxruntime, NumPy and soundfile.

    python speak_and_listen.py EXPORT_DIR "Hello there." -o hello.wav [--decoder nar] [--threads 2]

EXPORT_DIR is what ``tokenspeech export tts asr -o EXPORT_DIR`` wrote. The
tokenspeech sources must be importable (``PYTHONPATH=/path/to/tokenspeech``);
torch is never imported. Phonemes come from libespeak-ng (Debian package
libespeak-ng1), loaded through ctypes.
"""

from __future__ import annotations

import argparse
import logging
import sys

import soundfile as sf

from tokenspeech import runtime
from tokenspeech.asr.engine import RecognizerOptions
from tokenspeech.tts.pipeline import SynthesisOptions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="export directory (with manifest.json)")
    parser.add_argument("text", help="what to say")
    parser.add_argument("-o", "--output", default="speech.wav", help="where to write the audio (WAV)")
    parser.add_argument("--decoder", default="nar", choices=("nar", "semiar", "ar"), help="TTS decoder")
    parser.add_argument("--asr-decoder", default=None, help="ctc, paraformer, ar or semiar (default: the export's)")
    parser.add_argument("--voice", default=None, help="voice name (default: the export's)")
    parser.add_argument("--provider", default="auto", choices=runtime.PROVIDER_CHOICES)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = onnxruntime's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    rt = runtime.load(args.export, runtime.RuntimeOptions(provider=args.provider, intra_op_threads=args.threads))
    synthesizer = rt.synthesizer()
    voice = args.voice or synthesizer.voices[0]
    result = synthesizer.synthesize(args.text, SynthesisOptions(voice=voice, decoder=args.decoder))
    sf.write(args.output, result.audio, result.sample_rate)
    print(f"wrote {args.output}: {result.seconds:.2f} s at {result.sample_rate} Hz")

    options = RecognizerOptions(decoder=args.asr_decoder) if args.asr_decoder else None
    recognizer = rt.recognizer(options)
    audio, rate = sf.read(args.output, dtype="float32")
    if rate != recognizer.sample_rate:
        print(f"the recognizer needs {recognizer.sample_rate} Hz audio, the synthesizer made {rate} Hz",
              file=sys.stderr)
        return 1
    transcript = recognizer.transcribe_batch([audio])[0]
    print(f"heard: {transcript.text!r}")
    print("torch imported:", "torch" in sys.modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
