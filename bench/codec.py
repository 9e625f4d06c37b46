#!/usr/bin/env python3
"""tscodec against Opus and Codec2, side by side in one run (issue 3's measurement).

For every system (our codec at 1.5 / 3 / 6 kbps, Opus VoIP at 6 and 8 kbps,
Codec2 at 3200 and 1600 bps, and the original audio for the WER baseline):

- round-trips two test sets: unseen sentences of the corpus test split (trained
  voices) and the held-out split (voices the codec never heard);
- removes the codec's delay (ours: the exact ``output_delay_samples``; Opus:
  median waveform cross-correlation lag; Codec2, whose waveform does not follow
  the input phase: band-envelope cross-correlation pooled over the files);
- scores PESQ-WB, PESQ-NB, STOI, log-mel distance and judge WER (Whisper base);
- measures encode / decode speed in multiples of real time on one thread
  (ours through ONNX Runtime on offline graphs; Opus / Codec2 as the Debian
  command-line programs, by child CPU time).

Usage:
  .venv/bin/python bench/codec.py --corpus /work/corpus --out /tmp/bench-codec
  .venv/bin/python bench/codec.py --corpus tests/fixtures/corpus --per-set 3 --no-judge   # smoke run

Needs ffmpeg (libopus), opusdec (opus-tools) and c2enc/c2dec (codec2); `make install` installs them.
Decoded audio goes to OUT/decoded/<system>/<set>/<id>.wav, figures to OUT/results.json and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from _common import Clip
from tokenspeech.audio import load_audio, resample
from tokenspeech.eval.codec_metrics import align_delay, log_mel_distance, pesq_nb, pesq_wb, stoi

RATE = 16000
NARROW_RATE = 8000
ENVELOPE_HOP = 16  # 1 ms at 16 kHz: resolution of the envelope delay estimate
MAX_DELAY_SECONDS = 0.25

logger = logging.getLogger("bench.codec")


# ----------------------------------------------------------------------------- test sets


def _rows(listing: Path) -> list[dict]:
    return [json.loads(line) for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]


def pick_clips(corpus: Path, per_set: int, seed: int) -> list[Clip]:
    """``per_set`` clips of the test split (half teacher, half other voices) and of the held-out split."""
    rng = np.random.default_rng(seed)
    clips: list[Clip] = []
    for split in ("test", "heldout"):
        listing = corpus / f"{split}.jsonl"
        if not listing.is_file():
            logger.warning("%s missing: skipping the %s set", listing, split)
            continue
        rows = [r for r in _rows(listing) if "error" not in r and 1.0 <= float(r.get("duration", 0)) <= 12.0]
        if split == "test":
            teacher = [r for r in rows if r["voice"] == "joe"]
            others = [r for r in rows if r["voice"] != "joe"]
            half = per_set // 2
            chosen = ([teacher[i] for i in rng.permutation(len(teacher))[:per_set - half]]
                      + [others[i] for i in rng.permutation(len(others))[:half]])
        else:
            chosen = [rows[i] for i in rng.permutation(len(rows))[:per_set]]
        for row in chosen:
            wav, _ = load_audio(corpus / row["path"], sample_rate=RATE)
            clips.append(Clip(row["id"], split, row["voice"], row.get("text", ""), wav))
    if not clips:
        raise SystemExit(f"{corpus}: no test.jsonl or heldout.jsonl with usable clips")
    return clips


# ----------------------------------------------------------------------------- systems


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wav * 32767.0), -32768, 32767).astype("<i2")


def _run(cmd: list[str]) -> float:
    """Run a command; return the child's user+sys CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-300:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class RoundTrip:
    audio: np.ndarray
    payload_bytes: int
    encode_cpu: float
    decode_cpu: float


class Original:
    name, kbps, delay_method = "original", 256.0, "none"

    def round_trip(self, wav: np.ndarray, work: Path) -> RoundTrip:
        return RoundTrip(wav, 2 * wav.size, 0.0, 0.0)


class Opus:
    """libopus through ffmpeg, VoIP application, 16 kHz; decoded by opusdec at 16 kHz."""

    delay_method = "waveform"

    def __init__(self, kbps: int) -> None:
        self.kbps, self.name = float(kbps), f"opus-{kbps}k"

    def round_trip(self, wav: np.ndarray, work: Path) -> RoundTrip:
        source, coded, decoded = work / "in.wav", work / "coded.opus", work / "out.wav"
        sf.write(source, _pcm16(wav), RATE, subtype="PCM_16")
        encode = _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-threads", "1", "-i", str(source),
                       "-c:a", "libopus", "-application", "voip", "-b:a", f"{int(self.kbps)}k", "-ac", "1",
                       str(coded)])
        decode = _run(["opusdec", "--quiet", "--rate", str(RATE), str(coded), str(decoded)])
        audio, _ = sf.read(decoded, dtype="float32")
        return RoundTrip(audio, coded.stat().st_size, encode, decode)


class Codec2:
    """Codec 2 (c2enc / c2dec, 8 kHz raw PCM); output resampled back to 16 kHz."""

    delay_method = "envelope"

    def __init__(self, mode: int) -> None:
        self.mode, self.kbps, self.name = mode, mode / 1000, f"codec2-{mode}"

    def round_trip(self, wav: np.ndarray, work: Path) -> RoundTrip:
        source, coded, decoded = work / "in.raw", work / "coded.c2", work / "out.raw"
        _pcm16(resample(wav, RATE, NARROW_RATE)).tofile(source)
        encode = _run(["c2enc", str(self.mode), str(source), str(coded)])
        decode = _run(["c2dec", str(self.mode), str(coded), str(decoded)])
        audio = np.fromfile(decoded, dtype="<i2").astype(np.float32) / 32768.0
        return RoundTrip(resample(audio, NARROW_RATE, RATE), coded.stat().st_size, encode, decode)


class Tscodec:
    """Our codec with ``codebooks`` codebooks (PyTorch for quality; speed is measured with ONNX Runtime)."""

    delay_method = "known"

    def __init__(self, codec, codebooks: int) -> None:
        self.codec, self.codebooks = codec, codebooks
        self.kbps = codec.info.bitrate_kbps(codebooks)
        self.name = f"tscodec-{self.kbps:g}k"
        self.delay = codec.output_delay_samples

    def round_trip(self, wav: np.ndarray, work: Path) -> RoundTrip:
        import torch

        start = time.process_time()
        codes = self.codec.encode(torch.from_numpy(wav)[None, None], self.codebooks)
        middle = time.process_time()
        audio = self.codec.decode(codes)[0, 0].numpy()
        bits = codes.shape[1] * codes.shape[2] * np.log2(self.codec.info.codebook_size)
        return RoundTrip(audio, int(np.ceil(bits / 8)), middle - start, time.process_time() - middle)


# ----------------------------------------------------------------------------- delay and scores


def _band_envelope(wav: np.ndarray) -> np.ndarray:
    """Compressed band energies at 1 ms hops, mean removed per band: follows the speech, not its phase."""
    import librosa

    spectrum = np.abs(librosa.stft(wav.astype(np.float32), n_fft=512, hop_length=ENVELOPE_HOP))
    bands = librosa.filters.mel(sr=RATE, n_fft=512, n_mels=24) @ spectrum
    bands = bands ** 0.3
    return bands - bands.mean(axis=1, keepdims=True)


def envelope_delay(refs: list[np.ndarray], outs: list[np.ndarray]) -> int:
    """One delay (samples) for a codec: the lag maximising band-envelope correlation summed over files."""
    max_lag = int(MAX_DELAY_SECONDS * RATE) // ENVELOPE_HOP
    total = np.zeros(2 * max_lag + 1)
    for ref, out in zip(refs, outs):
        a, b = _band_envelope(ref), _band_envelope(out)
        n = a.shape[1] + b.shape[1]
        corr = np.fft.irfft(np.fft.rfft(b, n, axis=1) * np.conj(np.fft.rfft(a, n, axis=1)), n, axis=1).sum(0)
        total += np.concatenate([corr[n - max_lag:], corr[:max_lag + 1]]) / (np.linalg.norm(a) * np.linalg.norm(b))
    return int((np.argmax(total) - max_lag) * ENVELOPE_HOP)


def system_delay(system, refs: list[np.ndarray], outs: list[np.ndarray]) -> int:
    if system.delay_method == "none":
        return 0
    if system.delay_method == "known":
        return int(system.delay)
    if system.delay_method == "waveform":
        return int(statistics.median(align_delay(r, o, int(MAX_DELAY_SECONDS * RATE))[2] for r, o in zip(refs, outs)))
    return envelope_delay(refs, outs)


def shifted(ref: np.ndarray, out: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """``out`` moved ``delay`` samples earlier, padded / cut to the reference's length."""
    out = out[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, np.float32), out])
    out = np.pad(out, (0, max(0, ref.size - out.size)))[:ref.size]
    return ref, out.astype(np.float32)


def quality(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {"pesq_wb": pesq_wb(ref, out, RATE), "pesq_nb": pesq_nb(ref, out, RATE), "stoi": stoi(ref, out, RATE),
            "mel": log_mel_distance(ref, out, RATE)}


# ----------------------------------------------------------------------------- speed


def ours_speed(codec, codebooks: list[int], audio: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """x real time of the offline ONNX encoder / decoder graphs on one ORT thread (best of ``repeats``)."""
    import onnxruntime as ort
    import torch

    from tokenspeech.export.codec import GRAPH_NAMES, export_codec_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    seconds = audio.size / RATE
    wav = audio[None, None, : audio.size - audio.size % codec.info.hop_length].astype(np.float32)
    speeds = {}
    with tempfile.TemporaryDirectory() as folder:
        export = export_codec_onnx(codec.model, Path(folder))
        encoder = ort.InferenceSession(str(export.graphs[GRAPH_NAMES.encoder]), options, providers=["CPUExecutionProvider"])
        decoder = ort.InferenceSession(str(export.graphs[GRAPH_NAMES.decoder]), options, providers=["CPUExecutionProvider"])
        feed = encoder.get_inputs()[0].name
        codes = encoder.run(None, {feed: wav})[0]
        encode = min(_timed(lambda: encoder.run(None, {feed: wav})) for _ in range(repeats))
        with torch.inference_mode():
            reference = codec.decode(torch.from_numpy(codes[:, :codebooks[-1]]))[0, 0].numpy()
        for k in codebooks:
            feed_codes = {decoder.get_inputs()[0].name: np.ascontiguousarray(codes[:, :k])}
            decoded = decoder.run(None, feed_codes)[0]
            decode = min(_timed(lambda: decoder.run(None, feed_codes)) for _ in range(repeats))
            speeds[f"tscodec-{codec.info.bitrate_kbps(k):g}k"] = {"encode_x_rt": seconds / encode,
                                                                   "decode_x_rt": seconds / decode}
        speeds["parity_max_abs_diff"] = float(np.max(np.abs(decoded[0, 0] - reference)))
    return speeds


def _timed(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def peer_speed(system, audio: np.ndarray, repeats: int) -> dict[str, float]:
    """x real time of a command-line codec on ``audio`` (child CPU seconds, best of ``repeats``)."""
    seconds = audio.size / RATE
    with tempfile.TemporaryDirectory() as folder:
        runs = [system.round_trip(audio, Path(folder)) for _ in range(repeats)]
    return {"encode_x_rt": seconds / max(min(r.encode_cpu for r in runs), 1e-6),
            "decode_x_rt": seconds / max(min(r.decode_cpu for r in runs), 1e-6)}


# ----------------------------------------------------------------------------- main


@dataclass
class SystemResult:
    name: str
    kbps: float
    delay_ms: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> metric -> mean
    wer: dict[str, float] = field(default_factory=dict)
    speed: dict[str, float] = field(default_factory=dict)
    file_kbps: float = 0.0


def _mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]} if rows else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"), help="corpus with test.jsonl, heldout.jsonl")
    parser.add_argument("--codec", type=Path, default=None, help="tscodec weights (default: the shipped codec)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/codec"), help="output folder")
    parser.add_argument("--per-set", type=int, default=40, help="clips per test set (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip choice")
    parser.add_argument("--speed-seconds", type=float, default=60.0, help="audio length for the speed runs")
    parser.add_argument("--repeats", type=int, default=3, help="speed runs per system (best is kept)")
    parser.add_argument("--no-judge", action="store_true", help="skip judge WER (Whisper base)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    from tqdm import tqdm

    from tokenspeech.codecs.native import load_native_codec

    torch.set_num_threads(1)
    codec = load_native_codec(args.codec)
    ladder = [k for k in (6, 12, 24) if k <= codec.info.num_codebooks]
    systems = ([Original()] + [Tscodec(codec, k) for k in ladder]
               + [Opus(6), Opus(8), Codec2(3200), Codec2(1600)])
    clips = pick_clips(args.corpus, args.per_set, args.seed)
    sets = sorted({c.set for c in clips}, key=["test", "heldout"].index)
    logger.info("%d clips (%s), %.1f s of audio", len(clips), ", ".join(sets), sum(c.wav.size for c in clips) / RATE)

    results: list[SystemResult] = []
    decoded: dict[str, list[np.ndarray]] = {}
    for system in systems:
        with tempfile.TemporaryDirectory() as folder:
            trips = [system.round_trip(c.wav, Path(folder)) for c in tqdm(clips, desc=system.name, leave=False)]
        delay = system_delay(system, [c.wav for c in clips], [t.audio for t in trips])
        aligned = [shifted(c.wav, t.audio, delay)[1] for c, t in zip(clips, trips)]
        decoded[system.name] = aligned
        seconds = sum(c.wav.size for c in clips) / RATE
        result = SystemResult(system.name, system.kbps, 1000 * delay / RATE,
                              file_kbps=8 * sum(t.payload_bytes for t in trips) / seconds / 1000)
        if system.name != "original":
            per_clip = [quality(c.wav, a) for c, a in zip(clips, aligned)]
            result.scores = {s: _mean_scores([q for q, c in zip(per_clip, clips) if c.set == s]) for s in sets}
        for c, a in zip(clips, aligned):
            path = args.out / "decoded" / system.name / c.set / f"{c.id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, a, RATE, subtype="PCM_16")
        results.append(result)
        logger.info("%s: delay %.1f ms %s", system.name, result.delay_ms, json.dumps(result.scores))

    if not args.no_judge:
        from tokenspeech.eval.judge import WhisperJudge
        from tokenspeech.eval.wer import error_rates

        judge = WhisperJudge(threads=1)
        for result in results:
            hyps = [judge.transcribe(a) for a in tqdm(decoded[result.name], desc=f"judge {result.name}", leave=False)]
            for s in sets:
                pairs = [(c.text, h) for c, h in zip(clips, hyps) if c.set == s]
                result.wer[s] = 100 * error_rates([p[0] for p in pairs], [p[1] for p in pairs]).wer

    write_report(args.out / "results.json", clips, sets, args.seed, codec, results, None)  # kept if speed fails
    speech = np.concatenate([c.wav for c in clips])
    speech = np.tile(speech, int(np.ceil(args.speed_seconds * RATE / speech.size)))[: int(args.speed_seconds * RATE)]
    ours = ours_speed(codec, ladder, speech, args.repeats)
    for result, system in zip(results, systems):
        if isinstance(system, Tscodec):
            result.speed = ours[system.name]
        elif not isinstance(system, Original):
            result.speed = peer_speed(system, speech, args.repeats)

    print_table(results, sets, ours["parity_max_abs_diff"])
    write_report(args.out / "results.json", clips, sets, args.seed, codec, results, ours["parity_max_abs_diff"])
    print(f"\nwrote {args.out / 'results.json'} and decoded audio under {args.out / 'decoded'}")
    return 0


def write_report(path: Path, clips: list[Clip], sets: list[str], seed: int, codec, results: list[SystemResult],
                 parity: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"clips": {s: sum(c.set == s for c in clips) for s in sets}, "seed": seed,
              "codec_card": getattr(codec, "card", None), "onnx_vs_torch_decode_max_abs_diff": parity,
              "systems": [vars(r) for r in results]}
    path.write_text(json.dumps(report, indent=1, default=str))


def print_table(results: list[SystemResult], sets: list[str], parity: float) -> None:
    header = "| system | kbps | delay ms |"
    rule = "|---|---|---|"
    for s in sets:
        header += f" PESQ-WB {s} | STOI {s} | mel {s} | WER % {s} |"
        rule += "---|---|---|---|"
    header += " encode x RT | decode x RT |"
    rule += "---|---|"
    print("\n" + header + "\n" + rule)
    for r in results:
        line = f"| {r.name} | {r.kbps:g} | {r.delay_ms:.1f} |"
        for s in sets:
            sc = r.scores.get(s, {})
            line += (f" {sc.get('pesq_wb', float('nan')):.2f} | {sc.get('stoi', float('nan')):.3f} |"
                     f" {sc.get('mel', float('nan')):.3f} | {r.wer.get(s, float('nan')):.1f} |")
        line += f" {r.speed.get('encode_x_rt', float('nan')):.0f} | {r.speed.get('decode_x_rt', float('nan')):.0f} |"
        print(line)
    print(f"\nONNX Runtime vs PyTorch decoder, max |difference|: {parity:.2e}")


if __name__ == "__main__":
    sys.exit(main())
