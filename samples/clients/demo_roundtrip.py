"""`make demo`'s server round trip: start `tokenspeech serve`, speak a sentence over streaming gRPC,
transcribe that audio over streaming gRPC, print both, stop the server.

  python samples/clients/demo_roundtrip.py "The quick brown fox jumps over the lazy dog."
  python samples/clients/demo_roundtrip.py "Hello." --serve-arg=--models --serve-arg=tts=runs/tts/tts.safetensors

The server is a child process on a free loopback port, started with the
shipped models unless --serve-arg options say otherwise; it is stopped with
SIGTERM (a graceful drain) whatever happens. Exit status 0 when both calls
succeeded; the transcript is printed, not judged.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from python_client import recognition_results, synthesis_chunks

from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(channel: grpc.Channel, server: subprocess.Popen, timeout: float) -> None:
    """Poll gRPC health until SERVING; fail early (with the server's log) if the process dies."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before it was ready")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not serving after {timeout:.0f} s")


def round_trip(stub: pb_grpc.SpeechStub, args: argparse.Namespace) -> None:
    config = pb.SynthesisConfig(decoder=args.decoder, seed=args.seed, voice=args.voice,
                                audio_format=pb.AudioFormat(encoding=pb.PCM16))
    started, first, pieces, rate = time.perf_counter(), None, [], 0
    for chunk in synthesis_chunks(stub, args.text, config, [], args.timeout):
        first = first if first is not None else time.perf_counter() - started
        rate = chunk.audio_format.sample_rate_hz
        pieces.append(chunk.audio)
    pcm = b"".join(pieces)
    seconds = len(pcm) / 2 / rate
    print(f"synthesized over StreamingSynthesize ({args.decoder}): {seconds:.2f} s of audio in {len(pieces)} "
          f"chunks, first chunk after {1000 * first:.0f} ms, all after {time.perf_counter() - started:.2f} s")
    with wave.open(str(args.output), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    print(f"wrote {args.output}")
    recognition = pb.RecognitionConfig(decoder=args.asr_decoder,
                                       audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=rate))
    final = None
    for result in recognition_results(stub, pcm, rate, recognition, [], args.timeout):
        final = result if result.is_final else final
    if final is None:
        raise RuntimeError("StreamingRecognize ended without a final result")
    print(f"text sent:        {args.text}")
    print(f"text recognized:  {final.transcript}")
    print("words: " + " ".join(f"{w.word}[{w.start_seconds:.2f}-{w.end_seconds:.2f}]" for w in final.words))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", help="the sentence to speak and transcribe")
    parser.add_argument("-o", "--output", type=Path, default=Path("roundtrip.wav"), help="where the speech goes")
    parser.add_argument("--decoder", default="semiar", choices=("nar", "semiar", "ar"), help="TTS decoder")
    parser.add_argument("--asr-decoder", default="ctc", choices=("ctc", "semiar"),
                        help="streaming recognition decoder (ctc: the best trained head of the shipped model)")
    parser.add_argument("--voice", default="", help="TTS voice (default: the model's first)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each call, seconds")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds the server may take to start")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `tokenspeech serve` (repeat; use --serve-arg=--flag)")
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "tokenspeech", "serve", "--port", str(port), "--grace", "5", *args.serve_arg]
    print(f"starting: tokenspeech serve --port {port} {' '.join(args.serve_arg)}".rstrip())
    server = subprocess.Popen(command)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, server, args.ready_timeout)
            round_trip(pb_grpc.SpeechStub(channel), args)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        print("server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
