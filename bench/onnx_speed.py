#!/usr/bin/env python3
"""PyTorch eager against ONNX Runtime for the TTS and ASR models (issue 6's measurement).

For a TTS model (with its codec) and an ASR model, exported to ONNX in float32
and, unless ``--no-int8``, with int8 MatMul/Gemm weights:

- **parity**, float32 export: every graph the pipelines call is replayed
  through its PyTorch export wrapper on the very inputs ONNX Runtime saw
  (max abs difference per graph, integer outputs compared exactly); greedy
  (temperature 0) TTS token sequences per decoder must be identical, with the
  audio's max abs difference; ASR transcripts per decoder must be identical,
  with the log-mel features' max abs difference;
- **speed** on one thread (``--threads``): PyTorch eager, ORT float32 and ORT
  int8, per TTS decoder (``synthesize``: token model + codec, phonemes
  excluded) and per ASR decoder (``transcribe_batch`` of one utterance), best of
  ``--repeats`` runs after a warm-up; the issue's target is ORT >= 1.5x eager;
- **int8**: its speed-up over ORT float32, how many greedy TTS tokens it
  keeps, and with ``--manifest`` the ASR WER change on real speech
  (``--per-set`` utterances of each voice, :func:`tokenspeech.eval.wer.error_rates`);
  with ``--judge`` also the TTS WER change by the Whisper judge.

Usage:
  .venv/bin/python bench/onnx_speed.py                               # shipped tokenspeech/assets/tts.*, asr.*
  .venv/bin/python bench/onnx_speed.py --tts runs/tts/tts.safetensors --asr runs/asr/asr.safetensors \\
      --manifest /work/corpus/test.jsonl --per-set 20 --judge
  .venv/bin/python bench/onnx_speed.py --random default --sentences 2 --utterances 2   # random weights, default size
  .venv/bin/python bench/onnx_speed.py --random tiny --sentences 1 --utterances 1 --repeats 1   # smoke run

Random models (``--random``) are built from the default configs (``TtsConfig``
and ``AsrModelConfig`` defaults) or tiny ones, with the shipped codec; their
speed ratios are meaningful, their WERs are not. A Markdown table goes to
stdout, every figure to ``OUT/results.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path


import argparse
import json
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from random_models import SIZES, ModelPaths, save_random_models

from tokenspeech.asr.engine import AsrRecognizer, RecognizerOptions
from tokenspeech.asr.model_io import AsrBundle, load_asr_model
from tokenspeech.asr.torch_backend import TorchAsrBackend
from tokenspeech.codecs.native import NativeCodec, default_weights_path, load_native_codec
from tokenspeech.decoding import calls
from tokenspeech.export.directory import ExportOptions, export_directory
from tokenspeech.export.graph import GraphSpec, PostProcess
from tokenspeech.features import MelConfig
from tokenspeech.runtime.asr import OnnxAsrBackend
from tokenspeech.runtime.codec import OnnxCodec
from tokenspeech.runtime.manifest import ExportDirectory, GraphSet
from tokenspeech.runtime.sessions import RuntimeOptions
from tokenspeech.runtime.tts import OnnxTtsBackend
from tokenspeech.text.g2p import EspeakPhonemizer
from tokenspeech.text.vocab import Vocabulary
from tokenspeech.tts.model_io import TtsBundle, load_tts_model
from tokenspeech.tts.pipeline import STRATEGIES, SynthesisOptions, Synthesizer
from tokenspeech.tts.torch_backend import TorchTtsBackend

logger = logging.getLogger("bench.onnx")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tokenspeech" / "assets"
TTS_DECODERS = ("nar", "semiar", "ar")
ASR_DECODERS = ("ctc", "paraformer", "ar", "semiar")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A large crowd gathered in the square to hear the mayor speak about the new bridge.",
    "We will meet again tomorrow morning at half past nine, unless it rains.",
    "Reading a good book on a quiet evening is one of life's simple pleasures.",
    "The engineers tested the system for three weeks before they released it.",
)
RECORDED_CALLS = (0, 1, 7, 31)  # which calls of each graph the parity replay checks
FP32, INT8, EAGER = "ort_fp32", "ort_int8", "eager"


# ----------------------------------------------------------------------------- models


def prepare_models(args: argparse.Namespace, workdir: Path) -> ModelPaths:
    """The models to measure: given paths, or random ones saved as artifacts into ``workdir/models``."""
    codec_path = args.codec or default_weights_path()
    if args.random is None:
        return ModelPaths(args.tts, args.asr, codec_path)
    return save_random_models(args.random, workdir / "models", codec_path)


def export_models(paths: ModelPaths, out: Path, post: PostProcess) -> float:
    """Export TTS (with its codec) and ASR into ``out``; returns the seconds it took."""
    started = time.perf_counter()
    export_directory([str(paths.tts), str(paths.asr)], out, ExportOptions(post, paths.codec))
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- the two sides


@dataclass
class Side:
    """One way of running the models: PyTorch eager or an ONNX Runtime export."""

    name: str
    synthesizer: Synthesizer
    asr_backend: Any
    vocabulary: Vocabulary
    mel: MelConfig
    graphs: list[GraphSet] = field(default_factory=list)

    def recognizer(self, decoder: str) -> AsrRecognizer:
        return AsrRecognizer(self.asr_backend, self.vocabulary, self.mel, RecognizerOptions(decoder=decoder))


def eager_side(tts: TtsBundle, codec: NativeCodec, asr: AsrBundle, phonemize: Callable[[str], str]) -> Side:
    synthesizer = Synthesizer(tts, codec, phonemize, backend=TorchTtsBackend(tts.model))
    return Side(EAGER, synthesizer, TorchAsrBackend(asr.model, asr.mel), asr.vocabulary, asr.mel)


def onnx_side(name: str, directory: Path, options: RuntimeOptions, phonemize: Callable[[str], str]) -> Side:
    export = ExportDirectory.open(directory)
    tts, codec, asr = OnnxTtsBackend(export, options), OnnxCodec(export, options), OnnxAsrBackend(export, options)
    for graphs in (tts.graphs, codec.graphs, asr.graphs):
        graphs.open_all()
    synthesizer = Synthesizer(tts.info, codec, phonemize, backend=tts)
    return Side(name, synthesizer, asr, asr.vocabulary, asr.mel, [tts.graphs, codec.graphs, asr.graphs])


# ----------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class Call:
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class Recorder:
    """Keeps the feeds and outputs of some calls (:data:`RECORDED_CALLS`) of every graph of a side."""

    def __init__(self) -> None:
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self._counts: dict[str, int] = defaultdict(int)
        self._saved: list[tuple[Any, Any]] = []

    @contextmanager
    def recording(self, graph_sets: list[GraphSet]) -> Iterator[Recorder]:
        for graphs in graph_sets:
            for name in graphs.entries:
                graph = graphs[name]
                self._saved.append((graph, graph.run))
                graph.run = self._wrap(name, graph.run)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for graph, run in self._saved:
                graph.run = run  # type: ignore[method-assign]
            self._saved.clear()

    def _wrap(self, name: str, run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def recorded(feeds: dict[str, Any], keep: Any = ()) -> dict[str, Any]:
            outputs = run(feeds, keep)
            if self._counts[name] in RECORDED_CALLS:
                self.calls[name].append(Call({k: np.array(v) for k, v in feeds.items()},
                                             {k: np.array(v) for k, v in outputs.items()}))
            self._counts[name] += 1
            return outputs

        return recorded


def _difference(actual: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """(max abs difference of floats, count of differing integers/booleans)."""
    if actual.shape != expected.shape:
        return float("inf"), max(actual.size, expected.size)
    if np.issubdtype(expected.dtype, np.floating):
        return (float(np.max(np.abs(actual - expected))) if actual.size else 0.0), 0
    return 0.0, int(np.count_nonzero(actual != expected))


def replay_graphs(specs: dict[str, GraphSpec], calls: dict[str, list[Call]]) -> dict[str, dict[str, Any]]:
    """Every recorded ORT call of a graph in ``specs`` run again through its PyTorch export wrapper."""
    report = {}
    for graph, recorded in calls.items():
        spec = specs.get(graph)
        if spec is None:
            continue
        worst, mismatches, checked = 0.0, 0, 0
        for call in recorded:
            if any(name not in call.feeds for name in spec.inputs):
                continue
            with torch.inference_mode():
                result = spec.module.eval()(*[torch.from_numpy(call.feeds[name]) for name in spec.inputs])
            results = result if isinstance(result, tuple) else (result,)
            for name, tensor in zip(spec.outputs, results):
                tensor = tensor.detach()
                diff, wrong = _difference(call.outputs[name], tensor.float().numpy()
                                          if tensor.is_floating_point() else tensor.numpy())
                worst, mismatches = max(worst, diff), mismatches + wrong
            checked += 1
        report[graph] = {"calls": checked, "max_abs_diff": worst, "integer_mismatches": mismatches}
    return report


def tts_tokens(side: Side, text: str, decoder: str) -> list[np.ndarray]:
    """Greedy (temperature 0) tokens ``[K, F]`` of each sentence of ``text``."""
    synthesizer = side.synthesizer
    options = SynthesisOptions(decoder=decoder, temperature=0.0, voice=synthesizer.voices[0])
    tokens = []
    for index, sentence in enumerate(synthesizer.sentences(text)):
        condition = synthesizer.backend.condition(sentence.ids, 0, options.rate)
        blocks = STRATEGIES[decoder].blocks(synthesizer.backend, condition, options, index)
        tokens.append(np.concatenate(list(calls.outputs(blocks)), axis=1))  # the program driven alone
    return tokens


def _audio(side: Side, tokens: list[np.ndarray]) -> np.ndarray:
    decoded = side.synthesizer.codec.decode(np.concatenate(tokens, axis=1)[None])
    return decoded.detach().numpy()[0, 0] if hasattr(decoded, "detach") else np.asarray(decoded)[0, 0]


def tts_parity(reference: Side, other: Side, text: str, decoders: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per decoder: greedy tokens of ``other`` against ``reference`` and the audio difference.

    ``token_agreement`` is over the frames both have (int8 may change a duration, hence the length).
    """
    report = {}
    for decoder in decoders:
        ours, theirs = tts_tokens(reference, text, decoder), tts_tokens(other, text, decoder)
        same = sum(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(ours, theirs))
        agree = [a[:, :n] == b[:, :n] for a, b in zip(ours, theirs) for n in [min(a.shape[1], b.shape[1])]]
        audio = (_difference(_audio(other, theirs), _audio(reference, ours))[0]
                 if same == len(ours) else None)
        report[decoder] = {"sentences": len(ours), "identical": same,
                           "same_length": sum(a.shape == b.shape for a, b in zip(ours, theirs)),
                           "token_agreement": float(np.mean(np.concatenate(agree, axis=1))),
                           "audio_max_abs_diff": audio}
    return report


def asr_parity(reference: Side, other: Side, audios: list[np.ndarray],
               decoders: tuple[str, ...]) -> dict[str, Any]:
    """Features' max abs difference and, per decoder, how many transcripts are identical."""
    features = max(_difference(other.asr_backend.features(a[None]), reference.asr_backend.features(a[None]))[0]
                   for a in audios)
    report: dict[str, Any] = {"features_max_abs_diff": features}
    for decoder in decoders:
        ours = [t.text for t in reference.recognizer(decoder).transcribe_batch(audios)] if len(audios) else []
        theirs = [t.text for t in other.recognizer(decoder).transcribe_batch(audios)] if len(audios) else []
        report[decoder] = {"utterances": len(audios), "identical": sum(a == b for a, b in zip(ours, theirs))}
    return report


# ----------------------------------------------------------------------------- speed


def best_of(run: Callable[[], float], repeats: int) -> float:
    """The smallest of ``repeats`` measured runs after one warm-up (``run`` returns its own seconds)."""
    run()
    return min(run() for _ in range(repeats))


def tts_speed(side: Side, text: str, decoder: str, repeats: int) -> dict[str, float]:
    """Seconds of token model + codec (phonemes excluded) to synthesize ``text``, and the audio seconds."""
    options = SynthesisOptions(decoder=decoder, voice=side.synthesizer.voices[0])
    seconds = {}

    def run() -> float:
        result = side.synthesizer.synthesize(text, options)
        seconds["audio"] = result.seconds
        return result.timings["tokens"] + result.timings["codec"]

    compute = best_of(run, repeats)
    return {"seconds": compute, "audio_seconds": seconds["audio"], "rtf": compute / seconds["audio"]}


def asr_speed(side: Side, audios: list[np.ndarray], decoder: str, repeats: int) -> dict[str, float]:
    """Seconds to transcribe every utterance one by one (features included)."""
    recognizer = side.recognizer(decoder)
    total_audio = sum(a.size for a in audios) / recognizer.sample_rate

    def run() -> float:
        started = time.perf_counter()
        for audio in audios:
            recognizer.transcribe_batch([audio])
        return time.perf_counter() - started

    compute = best_of(run, repeats)
    return {"seconds": compute, "audio_seconds": total_audio, "rtf": compute / total_audio}


# ----------------------------------------------------------------------------- test sets and WER


@dataclass(frozen=True)
class Utterance:
    id: str
    group: str
    text: str
    audio: np.ndarray


def pick_utterances(manifest: Path, per_set: int, seed: int = 0) -> list[Utterance]:
    """``per_set`` utterances of each voice (the manifest's ``voice`` field) of a JSONL manifest."""
    from tokenspeech.audio import load_audio
    from tokenspeech.eval.judge import read_manifest

    entries = read_manifest(manifest, group_by="voice")
    groups: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        groups[entry.group or "all"].append(entry)
    rng = np.random.default_rng(seed)
    chosen = []
    for group in sorted(groups):
        rows = groups[group]
        for index in sorted(rng.choice(len(rows), size=min(per_set, len(rows)), replace=False)):
            entry = rows[index]
            chosen.append(Utterance(entry.id, group, entry.text, load_audio(entry.path, 16000)[0]))
    return chosen


def asr_wer(side: Side, utterances: list[Utterance], decoder: str) -> dict[str, Any]:
    from tokenspeech.eval.wer import error_rates

    recognizer = side.recognizer(decoder)
    hyps = [recognizer.transcribe_batch([u.audio])[0].text for u in utterances]
    overall = error_rates([u.text for u in utterances], hyps).to_dict()
    per_set = {}
    for group in sorted({u.group for u in utterances}):
        pairs = [(u.text, h) for u, h in zip(utterances, hyps) if u.group == group]
        per_set[group] = error_rates([r for r, _ in pairs], [h for _, h in pairs]).wer
    return {**overall, "per_set": per_set}


def tts_wer(side: Side, texts: list[str], judge: Any) -> float:
    """Judge WER of ``texts`` synthesized with the default options (nar)."""
    from tokenspeech.eval.wer import error_rates

    options = SynthesisOptions(voice=side.synthesizer.voices[0])
    hyps = [judge.transcribe(side.synthesizer.synthesize(text, options).audio) for text in texts]
    return error_rates(texts, hyps).wer


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# ONNX Runtime vs PyTorch eager ({results['models']['label']}, {results['threads']} thread(s))", ""]
    lines += ["## Parity per graph (ORT float32 vs the PyTorch export wrapper, same inputs)", "",
              "| model | graph | calls | max abs diff | integer mismatches |", "|---|---|---|---|---|"]
    for model in ("tts", "asr"):
        for graph, row in results["parity"]["graphs"][model].items():
            lines.append(f"| {model} | {graph} | {row['calls']} | {_sci(row['max_abs_diff'])} | "
                         f"{row['integer_mismatches']} |")
    lines += ["", "## Parity per decoder (greedy)", "", "| model | decoder | identical | token agreement | "
              "audio max abs diff |", "|---|---|---|---|---|"]
    for decoder, row in results["parity"]["tts"].items():
        lines.append(f"| tts | {decoder} | {row['identical']}/{row['sentences']} sentences | "
                     f"{_fmt(row['token_agreement'], 4)} | {_sci(row['audio_max_abs_diff'])} |")
    asr = results["parity"]["asr"]
    for decoder in results["decoders"]["asr"]:
        lines.append(f"| asr | {decoder} | {asr[decoder]['identical']}/{asr[decoder]['utterances']} transcripts | "
                     f"- | features {_sci(asr['features_max_abs_diff'])} |")
    lines += ["", "## Speed (real-time factor = compute seconds / audio seconds; lower is faster)", "",
              "| model | decoder | audio s | eager RTF | ORT fp32 RTF | ORT / eager speed-up | ORT int8 RTF | "
              "int8 / fp32 speed-up |", "|---|---|---|---|---|---|---|---|"]
    for model in ("tts", "asr"):
        for decoder, row in results["speed"][model].items():
            int8 = row.get(INT8)
            lines.append(
                f"| {model} | {decoder} | {row[FP32]['audio_seconds']:.1f} | {_fmt(row[EAGER]['rtf'], 4)} | "
                f"{_fmt(row[FP32]['rtf'], 4)} | {row['ort_speedup']:.2f}x | {_fmt(int8['rtf'], 4) if int8 else '-'} | "
                f"{(str(round(row['int8_speedup'], 2)) + 'x') if int8 else '-'} |")
    if results.get("int8"):
        lines += ["", "## int8 against float32 (ORT)", "", "| model | decoder | greedy tokens identical | "
                  "same length | token agreement | WER fp32 | WER int8 |", "|---|---|---|---|---|---|---|"]
        for decoder, row in results["int8"]["tts"].items():
            lines.append(f"| tts | {decoder} | {row['identical']}/{row['sentences']} | {row['same_length']}/"
                         f"{row['sentences']} | {_fmt(row['token_agreement'], 4)} | - | - |")
        if "judge_wer" in results["int8"]:
            judged = results["int8"]["judge_wer"]
            lines.append(f"| tts | nar (judge) | - | - | - | {_fmt(judged[FP32])} | {_fmt(judged[INT8])} |")
        for decoder, row in results["int8"].get("asr_wer", {}).items():
            lines.append(f"| asr | {decoder} | - | - | - | {_fmt(row[FP32]['wer'])} | {_fmt(row[INT8]['wer'])} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tts", type=Path, default=ASSETS / "tts.safetensors", help="TTS model (default: shipped)")
    parser.add_argument("--asr", type=Path, default=ASSETS / "asr.safetensors", help="ASR model (default: shipped)")
    parser.add_argument("--codec", type=Path, default=None, help="the TTS model's tscodec (default: shipped)")
    parser.add_argument("--random", choices=SIZES, default=None,
                        help="measure random models of the default (or a tiny) size instead of --tts/--asr")
    parser.add_argument("--sentences", type=int, default=3, help=f"TTS sentences (1..{len(SENTENCES)})")
    parser.add_argument("--utterances", type=int, default=3, help="ASR utterances timed")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="compute threads for both backends")
    parser.add_argument("--tts-decoders", nargs="+", choices=TTS_DECODERS, default=list(TTS_DECODERS))
    parser.add_argument("--asr-decoders", nargs="+", choices=ASR_DECODERS, default=list(ASR_DECODERS))
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 export")
    parser.add_argument("--manifest", type=Path, default=None, help="test set (JSONL: id, text, path[, voice])")
    parser.add_argument("--per-set", type=int, default=10, help="utterances per voice of --manifest")
    parser.add_argument("--judge", action="store_true", help="TTS WER by the Whisper judge (needs [eval])")
    parser.add_argument("--workdir", type=Path, default=None, help="models and exports (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("bench-onnx"), help="results.json goes here")
    args = parser.parse_args(argv)
    if not 1 <= args.sentences <= len(SENTENCES) or args.utterances < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--sentences, --utterances, --repeats and --threads must be positive "
                     f"(--sentences at most {len(SENTENCES)})")
    return args


def _test_audio(args: argparse.Namespace, side: Side, text: str) -> tuple[list[np.ndarray], list[Utterance]]:
    """ASR inputs: manifest utterances when given, else what the TTS says (random TTS: speech-shaped noise)."""
    utterances = pick_utterances(args.manifest, args.per_set) if args.manifest else []
    if utterances:
        return [u.audio for u in utterances[: args.utterances]], utterances
    options = SynthesisOptions(voice=side.synthesizer.voices[0])
    audios = [side.synthesizer.synthesize(s, options).audio for s in SENTENCES[: args.utterances]]
    return audios, []


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tokenspeech.export.asr import graph_specs as asr_specs
    from tokenspeech.export.tts import graph_specs as tts_specs

    torch.set_num_threads(args.threads)
    options = RuntimeOptions(provider="cpu", intra_op_threads=args.threads, inter_op_threads=1)
    paths = prepare_models(args, workdir)
    exports = {FP32: workdir / "export-fp32"} | ({} if args.no_int8 else {INT8: workdir / "export-int8"})
    export_seconds = {name: export_models(paths, out, PostProcess("int8" if name == INT8 else None))
                      for name, out in exports.items()}
    tts, asr, codec = load_tts_model(paths.tts), load_asr_model(paths.asr), load_native_codec(paths.codec)
    phonemize = EspeakPhonemizer(tts.g2p_language).phonemize
    eager = eager_side(tts, codec, asr, phonemize)
    sides = {name: onnx_side(name, out, options, phonemize) for name, out in exports.items()}
    text = " ".join(SENTENCES[: args.sentences])
    tts_decoders, asr_decoders = tuple(args.tts_decoders), tuple(args.asr_decoders)
    audios, utterances = _test_audio(args, sides[FP32], text)

    logger.info("parity")
    recorder = Recorder()
    with recorder.recording(sides[FP32].graphs):
        tts_report = tts_parity(eager, sides[FP32], text, tts_decoders)
        asr_report = asr_parity(eager, sides[FP32], audios, asr_decoders)
    graphs = {"tts": replay_graphs(tts_specs(tts.model), recorder.calls),
              "asr": replay_graphs(asr_specs(asr.model), recorder.calls)}

    logger.info("speed")
    speed: dict[str, dict[str, Any]] = {"tts": {}, "asr": {}}
    for decoder in tts_decoders:
        row = {name: tts_speed(side, text, decoder, args.repeats) for name, side in {EAGER: eager, **sides}.items()}
        speed["tts"][decoder] = _ratios(row)
    for decoder in asr_decoders:
        row = {name: asr_speed(side, audios, decoder, args.repeats) for name, side in {EAGER: eager, **sides}.items()}
        speed["asr"][decoder] = _ratios(row)

    results: dict[str, Any] = {
        "models": {"label": f"random {args.random}-size weights" if args.random else "trained weights",
                   "tts": str(paths.tts), "asr": str(paths.asr), "codec": str(paths.codec),
                   "tts_parameters": sum(p.numel() for p in tts.model.parameters()),
                   "asr_parameters": sum(p.numel() for p in asr.model.parameters())},
        "threads": args.threads, "repeats": args.repeats, "sentences": args.sentences, "utterances": len(audios),
        "decoders": {"tts": list(tts_decoders), "asr": list(asr_decoders)}, "export_seconds": export_seconds,
        "parity": {"graphs": graphs, "tts": tts_report, "asr": asr_report}, "speed": speed}
    if INT8 in sides:
        logger.info("int8")
        results["int8"] = int8_report(args, sides, text, tts_decoders, asr_decoders, utterances)
    return results


def _ratios(row: dict[str, dict[str, float]]) -> dict[str, Any]:
    row = dict(row)
    # real-time factors, not seconds: an int8 model may predict other durations, hence other audio lengths
    row["ort_speedup"] = row[EAGER]["rtf"] / row[FP32]["rtf"]
    if INT8 in row:
        row["int8_speedup"] = row[FP32]["rtf"] / row[INT8]["rtf"]
    return row


def int8_report(args: argparse.Namespace, sides: dict[str, Side], text: str, tts_decoders: tuple[str, ...],
                asr_decoders: tuple[str, ...], utterances: list[Utterance]) -> dict[str, Any]:
    report: dict[str, Any] = {"tts": tts_parity(sides[FP32], sides[INT8], text, tts_decoders)}
    if utterances:
        report["asr_wer"] = {d: {name: asr_wer(sides[name], utterances, d) for name in (FP32, INT8)}
                             for d in asr_decoders}
    if args.judge and utterances:
        from tokenspeech.eval.judge import WhisperJudge

        judge = WhisperJudge(threads=args.threads)
        texts = [u.text for u in utterances]
        report["judge_wer"] = {name: tts_wer(sides[name], texts, judge) for name in (FP32, INT8)}
    return report


def main(argv: list[str] | None = None) -> int:
    # the int8 quantizer logs every tensor it skips on the root logger: show errors only, and our progress
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(args, workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))
    logger.info("wrote %s", args.out / "results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
