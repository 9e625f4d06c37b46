"""Serve the loaded models over gRPC: tokenspeech's own API and a Riva-compatible one.

Examples:
  tokenspeech serve                                   # shipped models, 127.0.0.1:50051
  tokenspeech serve --models tts=runs/tts/tts.safetensors asr=runs/asr/asr.safetensors
  tokenspeech serve --host 0.0.0.0 --token "$TS_TOKEN" --tls-cert cert.pem --tls-key key.pem
  tokenspeech serve --max-streams 8 --metrics-port 9090
  tokenspeech serve --backend onnx --models export/   # an export: tokenspeech export tts asr -o export/
  tokenspeech serve --backend onnx --models runs/tts/tts.safetensors --threads 2

Services: tokenspeech.v1.Speech (Synthesize, StreamingSynthesize, Recognize,
StreamingRecognize, Encode, Decode, ListModels), nvidia.riva.tts.RivaSpeechSynthesis
and nvidia.riva.asr.RivaSpeechRecognition (unchanged Riva clients work), gRPC
health checking and server reflection (grpcurl lists everything).

Models: each --models entry is PATH or NAME=PATH (weights or card; the card
says whether it is TTS or ASR); the first of each kind is the default. With
--token every call must send the metadata "authorization: Bearer TOKEN"
(health checks excepted). SIGINT/SIGTERM drain running streams first.

Backends: torch (PyTorch eager) or onnx (ONNX Runtime through
tokenspeech.runtime; same decoding code, same results within float
rounding). With --backend onnx a --models PATH may also be an export
directory (from `tokenspeech export`), which serves the TTS and/or ASR model
in it (as NAME-tts and NAME-asr when it has both); a .safetensors model is
exported first into --onnx-cache (a TTS together with the --codec weights),
once: the export is reused while the weights, card and tokenspeech version
stay the same. --codec may be an export directory holding a codec too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# plain dataclasses: no grpc, no torch
from tokenspeech.precisions import PRECISIONS
from tokenspeech.serving.config import BACKENDS, DEFAULT_BATCH_PATIENCE, DEFAULT_PORT


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default: {DEFAULT_PORT})")
    parser.add_argument("--models", nargs="+", default=[], metavar="[NAME=]PATH",
                        help="TTS/ASR models to serve (default: the shipped ones that exist)")
    parser.add_argument("--codec", type=Path, default=None,
                        help="codec weights for Encode/Decode, or (onnx backend) an export directory with a codec "
                             "(default: shipped)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="inference backend: torch, or onnx (ONNX Runtime; see above)")
    parser.add_argument("--onnx-cache", type=Path, default=None, metavar="DIR",
                        help="onnx backend: where .safetensors models are exported "
                             "(default: $XDG_CACHE_HOME/tokenspeech/onnx or ~/.cache/tokenspeech/onnx)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnx backend: intra-op threads per session (default 0: onnxruntime decides)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="torch backend: the models' large matrix products in fp32 (default) or bf16 "
                             "(bfloat16: faster on CPUs with AVX512-BF16 or AMX; audio and text differ slightly); "
                             "auto = bf16 where the CPU has it")
    parser.add_argument("--max-streams", type=int, default=16, help="concurrent requests before RESOURCE_EXHAUSTED")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="sessions stepped together, their model passes merged into batched calls "
                             "(1 = one at a time)")
    parser.add_argument("--batch-patience", type=int, default=DEFAULT_BATCH_PATIENCE, metavar="TURNS",
                        help="turns a smaller group of sessions may wait for a larger group at another point of "
                             f"its loop, so that both run as one batch afterwards (default {DEFAULT_BATCH_PATIENCE}; "
                             "0 = never wait; docs/serving.md has the measurements)")
    parser.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' on every call")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key (with --tls-cert)")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds running streams get at shutdown")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tokenspeech.serving.config import ModelSpec, ServerConfig
    from tokenspeech.serving.server import serve

    config = ServerConfig(host=args.host, port=args.port, models=tuple(ModelSpec.parse(m) for m in args.models),
                          backend=args.backend, max_streams=args.max_streams, max_batch=args.max_batch,
                          batch_patience=args.batch_patience, token=args.token,
                          tls_cert=args.tls_cert, tls_key=args.tls_key, metrics_port=args.metrics_port,
                          grace_seconds=args.grace, codec=args.codec,
                          onnx_cache=args.onnx_cache, threads=args.threads,
                          precision=args.precision)
    return serve(config)
