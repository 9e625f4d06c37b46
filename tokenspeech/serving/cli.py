"""Serve the loaded models over gRPC: tokenspeech's own API and a Riva-compatible one.

Examples:
  tokenspeech serve                                   # shipped models, 127.0.0.1:50051
  tokenspeech serve --models tts=runs/tts/tts.safetensors asr=runs/asr/asr.safetensors
  tokenspeech serve --host 0.0.0.0 --token "$TS_TOKEN" --tls-cert cert.pem --tls-key key.pem
  tokenspeech serve --max-streams 8 --metrics-port 9090

Services: tokenspeech.v1.Speech (Synthesize, StreamingSynthesize, Recognize,
StreamingRecognize, Encode, Decode, ListModels), nvidia.riva.tts.RivaSpeechSynthesis
and nvidia.riva.asr.RivaSpeechRecognition (unchanged Riva clients work), gRPC
health checking and server reflection (grpcurl lists everything).

Models: each --models entry is PATH or NAME=PATH (weights or card; the card
says whether it is TTS or ASR); the first of each kind is the default. With
--token every call must send the metadata "authorization: Bearer TOKEN"
(health checks excepted). SIGINT/SIGTERM drain running streams first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenspeech.serving.config import BACKENDS, DEFAULT_PORT  # plain dataclasses: no grpc, no torch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default: {DEFAULT_PORT})")
    parser.add_argument("--models", nargs="+", default=[], metavar="[NAME=]PATH",
                        help="TTS/ASR models to serve (default: the shipped ones that exist)")
    parser.add_argument("--codec", type=Path, default=None, help="codec weights for Encode/Decode (default: shipped)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend")
    parser.add_argument("--max-streams", type=int, default=16, help="concurrent requests before RESOURCE_EXHAUSTED")
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
                          backend=args.backend, max_streams=args.max_streams, token=args.token,
                          tls_cert=args.tls_cert, tls_key=args.tls_key, metrics_port=args.metrics_port,
                          grace_seconds=args.grace, codec=args.codec)
    return serve(config)
