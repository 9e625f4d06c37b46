"""Export models to ONNX for the embedded runtime and the server's ONNX backend.

Examples:
  tokenspeech export tts asr -o export/             # shipped models (a TTS brings its codec)
  tokenspeech export tscodec -o export/ --quantize int8
  tokenspeech export runs/tts/tts.safetensors --codec runs/codec/tscodec.safetensors -o export/ --fp16

MODEL is a shipped model (tscodec, tts, asr) or the path of a .safetensors
file with its .json model card beside it. Every inference graph is written
(codec encoder/decoder with streaming state, ASR encoder offline and
streaming, CTC/Paraformer/AR decoders, TTS duration, NAR, semi-AR and AR
steps) plus manifest.json naming every input and output; exporting into a
directory that has a manifest keeps its other models. Run the result with
`tokenspeech.runtime` (onnxruntime + NumPy only).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="tscodec, tts, asr, or a .safetensors path")
    parser.add_argument("-o", "--output", type=Path, required=True, help="export directory (created if missing)")
    parser.add_argument("--quantize", choices=("int8",), default=None, help="int8 weights (dynamic quantisation)")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute (float32 inputs/outputs)")
    parser.add_argument("--codec", type=Path, default=None, help="the tscodec of a TTS model (default: shipped)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tokenspeech.export.directory import ExportOptions, export_directory
    from tokenspeech.export.graph import PostProcess

    options = ExportOptions(PostProcess(args.quantize, args.fp16), args.codec)
    manifest = export_directory(args.models, args.output, options)
    print(manifest)
    return 0
