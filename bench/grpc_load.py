#!/usr/bin/env python3
"""Load on a real ``tokenspeech serve`` process over loopback: latency, concurrency, batching, and a soak.

Starts the server as a child process on 127.0.0.1 (a free port; nothing else
is ever contacted), then, with real gRPC clients in threads:

1. **one stream**: ``--single`` streaming syntheses one after another; time to
   the first audio chunk (p50, p95);
2. **concurrent streams**: ``--streams`` streaming syntheses at once: first
   chunk p50/p95, whether each stream ran faster than real time (audio seconds
   over its wall seconds), errors by gRPC status;
3. **batching**: the same concurrent syntheses, then as many concurrent unary
   recognitions and as many streaming recognitions, against a server with ``--max-batch`` (default 16) and one
   with batch size 1: audio seconds served per wall second. Each of the ``--streams`` clients runs its calls
   back to back for ``--load-seconds`` (closed loop, after one untimed warm-up call), so the figure is the
   sustained throughput of that many concurrent streams; ``--load-seconds 0`` runs one call per client (a
   single round, whose tail, where the longest texts finish alone, weighs on the figure). Both servers run
   side by side and their rounds alternate ``--repeats`` times (batched, 1, 1, batched, ...), so a drift of
   the machine's speed hits both alike; the figures pool the repeats and the ratio is printed per repeat;
4. ``--soak-minutes M`` (optional): ``--soak-clients`` clients alternate
   synthesis and recognition for M minutes; the server's resident memory is
   sampled every few seconds and its growth reported.

Every loop is bounded by a count and by ``--time-limit`` seconds; each call
has a deadline. Results: a Markdown table on stdout, ``OUT/results.json``.

Usage:
  .venv/bin/python bench/grpc_load.py --threads 2 --streams 16 --repeats 3 --soak-minutes 10
  .venv/bin/python bench/grpc_load.py --backend onnx --streams 16 --soak-minutes 10
  .venv/bin/python bench/grpc_load.py --random tiny --single 2 --streams 3 --soak-minutes 0.2   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from random_models import SIZES, ModelPaths, save_random_models

from tokenspeech.precisions import PRECISIONS
from tokenspeech.serving.config import DEFAULT_BATCH_PATIENCE
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc

logger = logging.getLogger("bench.grpc_load")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tokenspeech" / "assets"
HOST = "127.0.0.1"  # loopback only, by design
RATE = 16000
CALL_TIMEOUT = 120.0  # seconds per RPC
RSS_SAMPLE_SECONDS = 5.0
TEXTS = (
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again tomorrow morning at half past nine, unless it rains.",
    "A large crowd gathered in the square to hear the mayor speak about the new bridge.",
)


# ----------------------------------------------------------------------------- the server process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def rss_mb(self) -> float:
        """Resident memory of the server process (VmRSS), MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextmanager
def running_server(args: argparse.Namespace, models: ModelPaths, max_batch: int, workdir: Path,
                   max_streams: int) -> Iterator[ServerProcess]:
    """``tokenspeech serve`` on a free loopback port until the block ends (SIGTERM, then kill after 30 s)."""
    port = free_port()
    log = args.out / f"server-batch{max_batch}.log"  # kept after the run
    command = [sys.executable, "-m", "tokenspeech", "serve", "--host", HOST, "--port", str(port),
               "--models", f"tts={models.tts}", f"asr={models.asr}", "--codec", str(models.codec),
               "--backend", args.backend, "--max-streams", str(max_streams), "--max-batch", str(max_batch),
               "--batch-patience", str(args.batch_patience),
               "--grace", "1", "--onnx-cache", str(workdir / "onnx-cache")]
    if args.backend == "onnx":
        command += ["--threads", str(args.threads)]
    else:
        command += ["--precision", args.precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, log)
    try:
        channel = grpc.insecure_channel(server.target)
        try:
            grpc.channel_ready_future(channel).result(timeout=args.ready_timeout)
        except grpc.FutureTimeoutError as error:
            raise RuntimeError(f"the server did not come up in {args.ready_timeout:.0f} s; see {log}") from error
        finally:
            channel.close()
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ----------------------------------------------------------------------------- calls


@dataclass(frozen=True)
class Outcome:
    """One call: how long to its first chunk and to its end, how much audio, or the error code."""

    kind: str
    first: float | None = None
    wall: float = 0.0
    audio_seconds: float = 0.0
    error: str | None = None

    @property
    def faster_than_real_time(self) -> bool:
        return self.error is None and self.audio_seconds > self.wall


def synthesis_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``SynthesisConfig`` fields every synthesis of the run sets: decoder and, if given, steps and guidance."""
    fields: dict[str, Any] = {"decoder": args.decoder}
    for name in ("steps", "guidance", "fine_guidance"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def stream_synthesis(stub: pb_grpc.SpeechStub, text: str, fields: dict[str, Any], seed: int) -> Outcome:
    config = pb.SynthesisConfig(seed=seed, audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=RATE),
                                **fields)
    requests = iter([pb.StreamingSynthesizeRequest(config=config), pb.StreamingSynthesizeRequest(text=text)])
    started, first, samples = time.perf_counter(), None, 0
    try:
        for chunk in stub.StreamingSynthesize(requests, timeout=CALL_TIMEOUT):
            if first is None and chunk.audio:
                first = time.perf_counter() - started
            samples += len(chunk.audio) // 2
    except grpc.RpcError as error:
        return Outcome("synthesis", first, time.perf_counter() - started, samples / RATE, error.code().name)
    return Outcome("synthesis", first, time.perf_counter() - started, samples / RATE)


def recognition(stub: pb_grpc.SpeechStub, audio: bytes) -> Outcome:
    config = pb.RecognitionConfig(audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=RATE))
    started = time.perf_counter()
    try:
        stub.Recognize(pb.RecognizeRequest(config=config, audio=audio), timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        return Outcome("recognition", None, time.perf_counter() - started, 0.0, error.code().name)
    wall = time.perf_counter() - started
    return Outcome("recognition", wall, wall, len(audio) / 2 / RATE)


def streaming_recognition(stub: pb_grpc.SpeechStub, audio: bytes) -> Outcome:
    """StreamingRecognize with interim results, the audio sent in 100 ms pieces as fast as the server takes it."""
    config = pb.RecognitionConfig(interim_results=True,
                                  audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=RATE))
    piece = RATE // 10 * 2
    requests = [pb.StreamingRecognizeRequest(config=config)] + [
        pb.StreamingRecognizeRequest(audio=audio[start:start + piece]) for start in range(0, len(audio), piece)]
    started, first = time.perf_counter(), None
    try:
        for _ in stub.StreamingRecognize(iter(requests), timeout=CALL_TIMEOUT):
            first = first if first is not None else time.perf_counter() - started
    except grpc.RpcError as error:
        return Outcome("streaming recognition", first, time.perf_counter() - started, 0.0, error.code().name)
    return Outcome("streaming recognition", first, time.perf_counter() - started, len(audio) / 2 / RATE)


def closed_loop(clients: list[Callable[[int], Outcome]], seconds: float) -> tuple[list[Outcome], float]:
    """Every client at once (one thread each), each calling ``client(round)`` back to back until ``seconds``
    have passed since the start (at least once; a call started in time runs to its end); all outcomes and the
    wall seconds until the last call ended."""
    started = time.perf_counter()

    def loop(client: Callable[[int], Outcome]) -> list[Outcome]:
        outcomes = [client(0)]
        while time.perf_counter() - started < seconds:
            outcomes.append(client(len(outcomes)))
        return outcomes

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        per_client = list(pool.map(loop, clients))
    return [outcome for outcomes in per_client for outcome in outcomes], time.perf_counter() - started


# ----------------------------------------------------------------------------- measurements


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(outcomes: list[Outcome], wall: float | None = None) -> dict[str, Any]:
    firsts = [o.first for o in outcomes if o.first is not None and o.error is None]
    ok = [o for o in outcomes if o.error is None]
    summary: dict[str, Any] = {
        "calls": len(outcomes), "errors": dict(Counter(o.error for o in outcomes if o.error)),
        "first_p50": _percentile(firsts, 50), "first_p95": _percentile(firsts, 95),
        "faster_than_real_time": sum(o.faster_than_real_time for o in outcomes),
        "audio_seconds": sum(o.audio_seconds for o in ok), "first_seconds": sorted(firsts)}
    if wall is not None:
        summary["wall"] = wall
        summary["audio_per_wall_second"] = summary["audio_seconds"] / wall if wall > 0 else None
    return summary


class Deadline:
    """The run's time budget: loops check it before starting more work."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


def single_stream(stub: pb_grpc.SpeechStub, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    outcomes, fields = [], synthesis_fields(args)
    for index in range(args.single):
        if deadline.passed():
            break
        outcomes.append(stream_synthesis(stub, TEXTS[index % len(TEXTS)], fields, index))
    return summarise(outcomes)


LOAD_KINDS = ("synthesis", "recognition", "streaming_recognition")
Round = dict[str, tuple[list[Outcome], float]]  # one load round: by kind, the outcomes and the wall seconds


def load_round(stub: pb_grpc.SpeechStub, args: argparse.Namespace, audio: bytes) -> Round:
    """``--streams`` concurrent clients of streaming synthesis, then of unary recognition, then of streaming
    recognition, each for ``--load-seconds`` (closed loop) after one untimed warm-up call of each kind; by kind,
    the outcomes and the wall seconds."""
    fields = synthesis_fields(args)
    stream_synthesis(stub, TEXTS[0], fields, 0)
    recognition(stub, audio)
    streaming_recognition(stub, audio)
    synth = [lambda n, i=i: stream_synthesis(stub, TEXTS[(i + n) % len(TEXTS)], fields, 1000 * n + i)
             for i in range(args.streams)]
    recognize = [lambda n: recognition(stub, audio) for _ in range(args.streams)]
    stream = [lambda n: streaming_recognition(stub, audio) for _ in range(args.streams)]
    return {kind: closed_loop(clients, args.load_seconds)
            for kind, clients in zip(LOAD_KINDS, (synth, recognize, stream))}


def merge_rounds(rounds: list[Round]) -> dict[str, Any]:
    """One summary per kind over every repeat (outcomes pooled, wall seconds added), plus each repeat's
    audio seconds per wall second."""
    merged: dict[str, Any] = {}
    for kind in LOAD_KINDS:
        outcomes = [o for r in rounds for o in r[kind][0]]
        merged[kind] = summarise(outcomes, sum(r[kind][1] for r in rounds))
        merged[kind]["per_repeat"] = [summarise(*r[kind])["audio_per_wall_second"] for r in rounds]
    return merged


def soak(server: ServerProcess, stub: pb_grpc.SpeechStub, args: argparse.Namespace, audio: bytes,
         deadline: Deadline) -> dict[str, Any]:
    """Clients rotating streaming synthesis, unary recognition and streaming recognition for ``--soak-minutes``
    (within the deadline); RSS samples."""
    stop_at = time.monotonic() + min(args.soak_minutes * 60, max(0.0, deadline.left()))
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    fields = synthesis_fields(args)

    def client(index: int) -> None:
        turn = 0
        while time.monotonic() < stop_at:
            calls = (lambda: stream_synthesis(stub, TEXTS[turn % len(TEXTS)], fields, turn),
                     lambda: recognition(stub, audio), lambda: streaming_recognition(stub, audio))
            outcome = calls[(turn + index) % len(calls)]()
            with lock:
                outcomes.append(outcome)
            turn += 1

    samples = [(0.0, server.rss_mb())]
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.soak_clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(min(RSS_SAMPLE_SECONDS, max(0.1, stop_at - time.monotonic())))
        samples.append((time.monotonic() - started, server.rss_mb()))
    for thread in threads:
        thread.join(CALL_TIMEOUT)
    rss = [mb for _, mb in samples]
    return {"minutes": (time.monotonic() - started) / 60, "clients": args.soak_clients,
            "synthesis": summarise([o for o in outcomes if o.kind == "synthesis"]),
            "recognition": summarise([o for o in outcomes if o.kind == "recognition"]),
            "streaming_recognition": summarise([o for o in outcomes if o.kind == "streaming recognition"]),
            "rss_mb": {"start": rss[0], "end": rss[-1], "max": max(rss), "growth": rss[-1] - rss[0],
                       "samples": samples}}


# ----------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def markdown(results: dict[str, Any]) -> str:
    streams = results["streams"]
    lines = [f"# gRPC load ({results['backend']} backend, {results['models']}, decoder {results['decoder']}, "
             f"loopback)", ""]
    single = results["single"]
    lines += [f"One stream, {single['calls']} syntheses: first chunk p50 {_ms(single['first_p50'])}, "
              f"p95 {_ms(single['first_p95'])}; errors {single['errors'] or 'none'}.", ""]
    lines += [f"Concurrent clients: {streams}, each running its calls back to back for "
              f"{results['load_seconds']:g} s (0 = one call each).", ""]
    lines += ["| max batch | syntheses | first chunk p50 | p95 | faster than real time | errors | "
              "synthesis audio s per s | recognition audio s per s | streaming recognition audio s per s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for batch, row in results["rounds"].items():
        synth, recog, live = row["synthesis"], row["recognition"], row["streaming_recognition"]
        lines.append(f"| {batch} | {synth['calls']} | {_ms(synth['first_p50'])} | {_ms(synth['first_p95'])} | "
                     f"{synth['faster_than_real_time']}/{synth['calls']} | "
                     f"{synth['errors'] or recog['errors'] or live['errors'] or 'none'} | "
                     f"{synth['audio_per_wall_second']:.2f} | {recog['audio_per_wall_second']:.2f} | "
                     f"{live['audio_per_wall_second']:.2f} |")
    rows = results["rounds"]
    batched, single = rows.get(results["max_batch"]), rows.get(1)
    if batched is not None and single is not None and batched is not single:
        ratios = [f"{b / o:.2f}x"
                  for b, o in zip(batched["synthesis"]["per_repeat"], single["synthesis"]["per_repeat"])]
        total = batched["synthesis"]["audio_per_wall_second"] / single["synthesis"]["audio_per_wall_second"]
        lines += ["", f"Synthesis throughput, max batch {results['max_batch']} over 1: **{total:.2f}x** "
                  f"over {len(ratios)} alternating repeat(s); by repeat {', '.join(ratios)}."]
    if "soak" in results:
        soak_row = results["soak"]
        rss = soak_row["rss_mb"]
        kinds = ("synthesis", "recognition", "streaming_recognition")
        errors = {kind: soak_row[kind]["errors"] for kind in kinds if soak_row.get(kind, {}).get("errors")}
        lines += ["", f"Soak: {soak_row['minutes']:.1f} min, {soak_row['clients']} clients, "
                  f"{soak_row['synthesis']['calls']} streaming syntheses + {soak_row['recognition']['calls']} "
                  f"recognitions + {soak_row.get('streaming_recognition', {}).get('calls', 0)} streaming "
                  f"recognitions, errors {errors or 'none'}; "
                  f"server RSS {rss['start']:.0f} -> {rss['end']:.0f} MiB (max {rss['max']:.0f}, "
                  f"growth {rss['growth']:+.1f} MiB, {100 * rss['growth'] / rss['start']:+.1f} %)."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path:
    """First-chunk latency distributions (one stream; concurrent streams per max batch) and the soak's RSS."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if "soak" in results else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), squeeze=False)
    latency = axes[0][0]
    series = [("1 stream", results["single"]["first_seconds"])] + [
        (f"{results['streams']} clients, max batch {batch}", row["synthesis"]["first_seconds"])
        for batch, row in results["rounds"].items()]
    for label, values in series:
        if values:
            values = np.sort(np.asarray(values)) * 1000
            latency.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=label)
    latency.set_xlabel("time to first audio chunk (ms)")
    latency.set_ylabel("fraction of streams")
    latency.grid(alpha=0.3)
    latency.legend(fontsize=8)
    if "soak" in results:
        memory = axes[0][1]
        seconds, mb = np.array(results["soak"]["rss_mb"]["samples"]).T
        memory.plot(seconds / 60, mb)
        memory.set_xlabel("soak minutes")
        memory.set_ylabel("server resident memory (MiB)")
        memory.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tts", type=Path, default=ASSETS / "tts.safetensors", help="TTS model (default: shipped)")
    parser.add_argument("--asr", type=Path, default=ASSETS / "asr.safetensors", help="ASR model (default: shipped)")
    parser.add_argument("--codec", type=Path, default=ASSETS / "tscodec.safetensors", help="tscodec weights")
    parser.add_argument("--random", choices=SIZES, default=None, help="serve random models of this size instead")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--threads", type=int, default=1, help="compute threads of the server")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="torch backend: the server's --precision (both servers of the comparison)")
    parser.add_argument("--decoder", default="semiar", help="TTS decoder (semiar streams block by block)")
    parser.add_argument("--steps", type=int, default=None,
                        help="first-codebook passes asked for (default: the decoder's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale asked for (default: the decoder's)")
    parser.add_argument("--fine-guidance", type=float, default=None,
                        help="guidance of the fine pass asked for (default: the decoder's)")
    parser.add_argument("--single", type=int, default=5, help="sequential streams for the one-stream latency")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams (and recognitions)")
    parser.add_argument("--max-batch", type=int, default=16, help="batch size compared with 1")
    parser.add_argument("--load-seconds", type=float, default=20.0,
                        help="seconds each concurrent client keeps calling (closed loop); 0 = one call each")
    parser.add_argument("--repeats", type=int, default=1,
                        help="load rounds per batch size, alternating between the two servers (figures pool them)")
    parser.add_argument("--batch-patience", type=int, default=DEFAULT_BATCH_PATIENCE,
                        help="the server's --batch-patience (turns a smaller group waits for a larger one; "
                             "default: the server's)")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="mixed soak run; 0 = skip")
    parser.add_argument("--soak-clients", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds the server may take to start")
    parser.add_argument("--out", type=Path, default=Path("bench-grpc-load"))
    args = parser.parse_args(argv)
    if min(args.single, args.streams, args.max_batch, args.soak_clients, args.threads, args.repeats) < 1:
        parser.error("--single, --streams, --max-batch, --soak-clients, --threads and --repeats must be >= 1")
    if args.batch_patience < 0:
        parser.error("--batch-patience must be >= 0")
    if args.load_seconds < 0:
        parser.error("--load-seconds must be >= 0")
    if not 0 <= args.soak_minutes <= 24 * 60 or args.time_limit <= 0:
        parser.error("--soak-minutes must be in 0..1440 and --time-limit positive")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    deadline = Deadline(args.time_limit)
    models = (save_random_models(args.random, workdir / "models", args.codec) if args.random
              else ModelPaths(args.tts, args.asr, args.codec))
    results: dict[str, Any] = {"backend": args.backend, "decoder": args.decoder, "steps": args.steps,
                               "guidance": args.guidance, "fine_guidance": args.fine_guidance, "streams": args.streams,
                               "load_seconds": args.load_seconds, "batch_patience": args.batch_patience,
                               "models": f"random {args.random}-size" if args.random else "trained models",
                               "threads": args.threads, "precision": args.precision, "max_batch": args.max_batch,
                               "repeats": args.repeats,
                               "rounds": {}}
    batches = list(dict.fromkeys((args.max_batch, 1)))
    with ExitStack() as running:
        # Both servers run from the start, the one not measured idle, and their load rounds alternate
        # (batched, 1, 1, batched, ...): the machine's speed drifts by a third within minutes here, so
        # rounds measured far apart in time gave batching ratios from 2.2x to 3.4x on the same code.
        servers = {batch: running.enter_context(running_server(args, models, batch, workdir,
                                                               args.streams + args.soak_clients + 2))
                   for batch in batches}
        stubs = {batch: pb_grpc.SpeechStub(running.enter_context(grpc.insecure_channel(server.target)))
                 for batch, server in servers.items()}
        stub = stubs[args.max_batch]
        audio = stub.Synthesize(pb.SynthesizeRequest(text=TEXTS[0]), timeout=CALL_TIMEOUT).audio
        logger.info("one stream")
        results["single"] = single_stream(stub, args, deadline)
        rounds: dict[int, list[Round]] = {batch: [] for batch in batches}
        for repeat in range(args.repeats):
            for batch in batches if repeat % 2 == 0 else batches[::-1]:
                if deadline.passed():
                    logger.warning("time limit reached: skipping a round at max batch %d", batch)
                    continue
                logger.info("%d concurrent streams, max batch %d (repeat %d of %d)", args.streams, batch,
                            repeat + 1, args.repeats)
                rounds[batch].append(load_round(stubs[batch], args, audio))
        results["rounds"] = {batch: merge_rounds(done) for batch, done in rounds.items() if done}
        if args.soak_minutes > 0 and not deadline.passed():
            logger.info("soak for %.1f min", args.soak_minutes)
            results["soak"] = soak(servers[args.max_batch], stub, args, audio, deadline)
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as scratch:
        results = run(args, Path(scratch))
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))
    print(f"latency plot: {plot(results, args.out / 'latency.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
