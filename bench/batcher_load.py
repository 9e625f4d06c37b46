#!/usr/bin/env python3
"""In-process load on the server's batcher: where a batched worker's time goes, without gRPC.

``--streams`` client threads each run streaming syntheses back to back
(the same four texts as ``bench/grpc_load.py``) through one
:class:`tokenspeech.serving.batcher.Batcher`, the worker the server runs
per model; a batched worker (``--max-batch``) and a batch-1 worker take
turns ``--repeats`` times (batched, 1, 1, batched, ...), so a drift of the
machine's speed hits both alike. For each it prints the audio seconds
served per wall second and, by kind of model call, how many calls ran,
how many tasks each served and the milliseconds per task: the figures that
say whether a change made passes cheaper or fuller. No gRPC, no event loop,
no client process: the difference to ``bench/grpc_load.py`` is the
serving overhead.

``--block-pass`` instead times one batched semi-AR block pass of
``--streams`` sessions whose committed contexts range over 0-11 blocks of 16
frames (a quarter of them at the fine pass), and the same pass of one
session alone: the figure for changes to the cached transformer pass.

``--versus KEY=VALUE,...`` instead compares two decoding settings under the
same batched load: rounds of the decoder's defaults and of those options
(e.g. ``steps=3,fine_guidance=0``) take turns at ``--max-batch``, so a
drift of the machine hits both alike.

Usage:
  .venv/bin/python bench/batcher_load.py --threads 2 --streams 16 --seconds 15 --repeats 2
  .venv/bin/python bench/batcher_load.py --streams 16 --seconds 15 --repeats 3 --versus steps=3,fine_guidance=0
  .venv/bin/python bench/batcher_load.py --threads 2 --streams 16 --block-pass
  .venv/bin/python bench/batcher_load.py --random tiny --streams 3 --seconds 2 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import fail, markdown_table
from grpc_load import TEXTS
from random_models import SIZES, save_random_models

from tokenspeech.decoding import calls
from tokenspeech.decoding.calls import Call, Program
from tokenspeech.decoding.masked import MASK
from tokenspeech.serving.batcher import Batcher
from tokenspeech.serving.config import DEFAULT_BATCH_PATIENCE
from tokenspeech.tts.pipeline import AudioChunk, SynthesisOptions, Synthesizer


@dataclass(frozen=True)
class Round:
    max_batch: int
    audio_seconds: float
    wall_seconds: float
    calls: dict[str, tuple[int, int, float]]  # kind -> (calls, tasks, seconds)

    @property
    def throughput(self) -> float:
        return self.audio_seconds / self.wall_seconds


def _consume(program: Program[None]) -> Program[float]:
    """The stream's audio seconds; its chunks are dropped as a reader that keeps up would take them."""
    seconds = 0.0
    outputs = calls.Outputs(program)
    while (item := (yield from outputs.next())) is not calls.END:
        if isinstance(item, AudioChunk):
            seconds += len(item.audio) / item.sample_rate
    return seconds


def run_round(synth: Synthesizer, options: SynthesisOptions, max_batch: int, patience: int, streams: int,
              seconds: float, warmup: float) -> Round:
    """``streams`` closed-loop clients; after ``warmup`` seconds, the syntheses they start in the next
    ``seconds`` count, over the wall time until the last of them ends (as ``bench/grpc_load.py`` counts)."""
    worker = Batcher("tts", max_batch=max_batch, patience=patience)
    worker.start()
    lock = threading.Lock()
    served, last_end = [0.0], [0.0]
    window: list[float] = []  # [start, stop] of the counted window, once the warm-up is over

    def client(index: int) -> None:
        call = 0
        while True:
            started = time.perf_counter()
            if window and started >= window[1]:
                return
            counted = bool(window)
            text = TEXTS[(index + call) % len(TEXTS)]
            audio = worker.submit_program(_consume(synth.stream_program(text, options))).result(120)
            if counted:
                with lock:
                    served[0] += audio
                    last_end[0] = max(last_end[0], time.perf_counter())
            call += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    worker.call_stats.clear()
    start = time.perf_counter()
    window.extend([start, start + seconds])
    for thread in threads:
        thread.join()
    stats = {kind: (s.calls, s.tasks, s.seconds) for kind, s in worker.call_stats.items()}
    worker.stop(10)
    return Round(max_batch, served[0], last_end[0] - start if last_end[0] else seconds, stats)


def time_block_pass(synth: Synthesizer, sessions: int, repeats: int = 20, block: int = 16) -> float:
    """Seconds per batched block pass of ``sessions`` sessions with committed contexts of 0-11 blocks."""
    model = synth.backend.blocks()
    codebooks, dim = synth.backend.num_codebooks, model.config.dim
    rng = np.random.default_rng(0)
    requests = []
    for index in range(sessions):
        state = model.prepare(torch.randn(1, 12 * block + block, dim))
        past = int(rng.integers(0, 12)) * block
        if past:
            context = rng.integers(0, model.config.codebook_size, (1, codebooks, past))
            state = model.commit(context, 0, state)
        tokens = np.full((1, codebooks, block), MASK)
        tokens[:, 0, :block // 2] = rng.integers(0, model.config.codebook_size, block // 2)
        wanted = tuple(range(1, codebooks)) if index % 4 == 0 else (0,)
        requests.append(Call(model.block_logits, (tokens, past, wanted, state, False)))
    for _ in range(3):
        calls.run_batch(requests)
    started = time.perf_counter()
    for _ in range(repeats):
        calls.run_batch(requests)
    return (time.perf_counter() - started) / repeats


def pooled_throughput(rounds: list[Round], max_batch: int) -> float:
    """Audio seconds per wall second of the rounds at ``max_batch``, pooled over the repeats."""
    mine = [r for r in rounds if r.max_batch == max_batch]
    return sum(r.audio_seconds for r in mine) / sum(r.wall_seconds for r in mine)


def describe(rounds: list[Round]) -> str:
    """One table row per (max batch, kind): pooled over the repeats."""
    rows = []
    for max_batch in sorted({r.max_batch for r in rounds}, reverse=True):
        mine = [r for r in rounds if r.max_batch == max_batch]
        throughput = pooled_throughput(rounds, max_batch)
        kinds: dict[str, list[float]] = {}
        for r in mine:
            for kind, (n, tasks, secs) in r.calls.items():
                total = kinds.setdefault(kind, [0, 0, 0.0])
                total[0] += n
                total[1] += tasks
                total[2] += secs
        for kind, (n, tasks, secs) in sorted(kinds.items(), key=lambda item: -item[1][2]):
            rows.append([str(max_batch), f"{throughput:.2f}", kind, str(int(n)), f"{tasks / n:.1f}",
                         f"{1000 * secs / tasks:.2f}", f"{secs:.1f}"])
    return markdown_table(["max batch", "audio-s/s", "call", "calls", "tasks each", "ms per task", "seconds"], rows)


def versus_options(options: SynthesisOptions, spec: str) -> SynthesisOptions:
    """``options`` with the ``KEY=VALUE,...`` of ``spec`` (fields of :class:`SynthesisOptions`, as numbers)."""
    fields = {f.name for f in dataclasses.fields(SynthesisOptions)}
    changes: dict[str, float | int] = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"--versus: {item!r} is not KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        changes[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return dataclasses.replace(options, **changes)


def compare_options(synth: Synthesizer, a: SynthesisOptions, b: SynthesisOptions, args: argparse.Namespace) -> None:
    """Rounds of ``a`` and ``b`` alternating (a, b, b, a, ...) at ``--max-batch``; prints both throughputs."""
    list(synth.stream(TEXTS[0], b))
    served: dict[str, list[float]] = {"defaults": [], args.versus: []}
    for repeat in range(args.repeats):
        order = [("defaults", a), (args.versus, b)]
        for name, options in order if repeat % 2 == 0 else order[::-1]:
            result = run_round(synth, options, args.max_batch, args.patience, args.streams, args.seconds, args.warmup)
            served[name].append(result.throughput)
            print(f"{name}: {result.throughput:.2f} audio-s/s", file=sys.stderr)
    rows = [[name, " / ".join(f"{x:.2f}" for x in values), f"{sum(values) / len(values):.2f}"]
            for name, values in served.items()]
    print(markdown_table(["options", f"audio-s/s by round (max batch {args.max_batch})", "mean"], rows))
    first, second = (sum(v) / len(v) for v in served.values())
    print(f"\ndefaults over {args.versus}: **{first / second:.2f}x** ({args.repeats} alternating repeat(s))")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tts", type=Path, help="TTS model (default: shipped)")
    parser.add_argument("--random", choices=sorted(SIZES), help="random models of this size instead")
    parser.add_argument("--decoder", default="semiar", help="TTS decoder (semiar streams block by block)")
    parser.add_argument("--threads", type=int, default=2, help="torch compute threads")
    parser.add_argument("--streams", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--max-batch", type=int, default=16, help="batch size compared with 1")
    parser.add_argument("--patience", type=int, default=DEFAULT_BATCH_PATIENCE, help="the batcher's patience")
    parser.add_argument("--seconds", type=float, default=15.0, help="counted seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds before each round's count")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per batch size, alternating")
    parser.add_argument("--block-pass", action="store_true", help="time one batched block pass instead of a load")
    parser.add_argument("--versus", default=None, metavar="KEY=VALUE[,...]",
                        help="compare the defaults with these SynthesisOptions fields under the same batched load")
    args = parser.parse_args(argv)
    if min(args.threads, args.streams, args.max_batch, args.repeats) < 1 or args.seconds <= 0 or args.warmup < 0:
        fail("--threads, --streams, --max-batch and --repeats must be >= 1, --seconds > 0, --warmup >= 0")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        if args.random:
            synth = Synthesizer.load(save_random_models(args.random, Path(scratch)).tts)
        else:
            synth = Synthesizer.load(args.tts)
        if args.block_pass:
            batched, alone = time_block_pass(synth, args.streams), time_block_pass(synth, 1)
            print(f"block pass of {args.streams} sessions: {1000 * batched:.1f} ms ({1000 * batched / args.streams:.2f} "
                  f"ms per session); one session alone: {1000 * alone:.2f} ms")
            return
        options = SynthesisOptions(decoder=args.decoder)
        list(synth.stream(TEXTS[0], options))  # first-call costs out of the way
        if args.versus:
            compare_options(synth, options, versus_options(options, args.versus), args)
            return
        rounds = []
        for repeat in range(args.repeats):  # batched, 1, 1, batched, ...: a drift of the machine hits both alike
            for max_batch in (args.max_batch, 1) if repeat % 2 == 0 else (1, args.max_batch):
                rounds.append(run_round(synth, options, max_batch, args.patience, args.streams, args.seconds,
                                        args.warmup))
                print(f"max batch {max_batch}: {rounds[-1].throughput:.2f} audio-s/s", file=sys.stderr)
    print(describe(rounds))
    batched, alone = pooled_throughput(rounds, args.max_batch), pooled_throughput(rounds, 1)
    print(f"\nSynthesis throughput, max batch {args.max_batch} over 1: **{batched / alone:.2f}x** "
          f"({batched:.2f} vs {alone:.2f} audio-s/s, {args.repeats} alternating repeat(s))")


if __name__ == "__main__":
    main()
