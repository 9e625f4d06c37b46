"""ONNX export of every graph + the onnxruntime backends: PyTorch == ONNX Runtime on tiny random models.

One module-scoped export (tiny codec, TTS and ASR saved as artifacts, then
``export_directory``) feeds every test. Graphs are checked at shapes other
than the ones they were traced with; the pipelines (the same decoding code
over either backend) must give the same tokens, audio and transcripts.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_exports import export_tiny_models
from tiny_models import VOICES, speech_like

from tokenspeech import runtime
from tokenspeech.asr.engine import LM_DECODERS
from tokenspeech.asr.lm import load_lm
from tokenspeech.asr.model_io import AsrBundle, load_asr_model, save_asr_model
from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer
from tokenspeech.asr.torch_backend import TorchAttentionStep, TorchBlockDecoder
from tokenspeech.codecs.native import NativeCodec, load_native_codec, save_native_codec
from tokenspeech.decoding.masked import BOTH
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.export.manifest import AsrNames, TtsNames
from tokenspeech.runtime.asr import OnnxAsrBackend
from tokenspeech.runtime.sessions import CPU, CUDA, RuntimeOptions, choose_providers
from tokenspeech.runtime.tts import OnnxTtsBackend
from tokenspeech.tts.model_io import TtsBundle, load_tts_model
from tokenspeech.tts.pipeline import SynthesisOptions, Synthesizer
from tokenspeech.tts.torch_backend import TorchTtsBackend

TEXT = "Hello there, this is a test. How are you today?"
ATOL = 1e-4  # float32 graphs vs PyTorch eager; observed <= 1.2e-6 on these models
CPU_ONLY = RuntimeOptions(provider="cpu", intra_op_threads=1, inter_op_threads=1)


@dataclass(frozen=True)
class Exported:
    root: Path
    tts: TtsBundle
    asr: AsrBundle
    codec: NativeCodec


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Tiny models saved as artifacts (fp16 weights), reloaded for PyTorch, and exported once."""
    models = tmp_path_factory.mktemp("models")
    root = tmp_path_factory.mktemp("export")
    export_tiny_models(models, root)
    return Exported(root, load_tts_model(models / "tts"), load_asr_model(models / "asr"),
                    load_native_codec(models / "tscodec"))


@pytest.fixture(scope="module")
def rt(exported: Exported) -> runtime.Runtime:
    return runtime.load(exported.root, CPU_ONLY)


def _close(actual: np.ndarray, expected: torch.Tensor | np.ndarray, atol: float = ATOL) -> None:
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)


# ----------------------------------------------------------------------------- manifest


def test_manifest_names_every_graph_input_and_output(exported: Exported) -> None:
    manifest = json.loads((exported.root / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["opset"] >= 17
    assert set(manifest["models"]) == {"codec", "tts", "asr"}
    assert {"tokenspeech", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    tts, asr = manifest["models"]["tts"], manifest["models"]["asr"]
    assert set(tts["graphs"]) == {"tts_text", "tts_condition", "tts_unconditional", "tts_masked", "tts_block",
                                  "tts_ar_step"}
    assert set(asr["graphs"]) == {"asr_encoder", "asr_subsample", "asr_encoder_chunk", "asr_paraformer",
                                  "asr_ar_memory", "asr_ar_step", "asr_block_memory", "asr_block_step",
                                  "asr_block_context"}
    assert tts["voices"] == list(VOICES) and tts["phoneme_vocabulary"] == list(exported.tts.phonemes.symbols)
    assert asr["vocabulary"] == list(exported.asr.vocabulary.symbols) and asr["sample_rate"] == 16000
    assert manifest["models"]["codec"]["frame_rate"] == exported.codec.info.frame_rate
    assert TtsNames.from_json(tts["names"]) == TtsNames() and AsrNames.from_json(asr["names"]) == AsrNames()
    for model in manifest["models"].values():
        for entry in model["graphs"].values():
            graph = onnx.load(str(exported.root / entry["file"]))
            onnx.checker.check_model(graph)
            assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
            assert [i.name for i in graph.graph.input] == [i["name"] for i in entry["inputs"]]
            assert [o.name for o in graph.graph.output] == [o["name"] for o in entry["outputs"]]
            assert all(isinstance(axis, (int, str)) for item in entry["inputs"] for axis in item["shape"])


def test_missing_directory_or_model_is_a_model_load_error(tmp_path: Path, exported: Exported) -> None:
    with pytest.raises(ModelLoadError, match="tokenspeech export"):
        runtime.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "models": {}}))
    with pytest.raises(ModelLoadError, match="no tts model"):
        runtime.load(tmp_path).synthesizer()


# ----------------------------------------------------------------------------- graphs vs PyTorch


def test_tts_graphs_match_torch_at_other_shapes(exported: Exported) -> None:
    model = exported.tts.model
    backend = OnnxTtsBackend(runtime.load(exported.root).export, CPU_ONLY)
    ids = np.array([5, 9, 12, 7, 30, 2, 18, 22, 11, 4, 3], dtype=np.int64)
    onnx_condition = backend.condition(ids, voice=2, rate=0.8)
    torch_condition = TorchTtsBackend(model).condition(ids, voice=2, rate=0.8)
    assert np.array_equal(onnx_condition.durations, torch_condition.durations)
    _close(onnx_condition.cond, torch_condition.cond)
    cond = torch_condition.cond
    tokens = np.random.default_rng(0).integers(-1, 32, size=(1, 3, cond.shape[1]))
    masked_onnx, masked_torch = backend.masked(), TorchTtsBackend(model).masked()
    for codebooks, unconditional in (((0,), False), ((1, 2), True), ((0, 2), False), ((0,), BOTH)):
        expected, _ = masked_torch.logits(tokens, codebooks, masked_torch.prepare(cond), unconditional)
        actual, _ = masked_onnx.logits(tokens, codebooks, masked_onnx.prepare(cond.numpy()), unconditional)
        _close(actual, expected)
    # AR step: one position at a time after a cache of 5, then two at once
    step_onnx, step_torch = backend.ar(), TorchTtsBackend(model).ar()
    state_onnx, state_torch = step_onnx.prepare(cond.numpy()), step_torch.prepare(cond)
    for width in (1, 1, 1, 1, 1, 2, 1):
        previous = np.random.default_rng(width).integers(0, 33, size=(1, width))
        actual, state_onnx = step_onnx.step(previous, state_onnx)
        expected, state_torch = step_torch.step(previous, state_torch)
        _close(actual, expected)


def test_semiar_block_graph_matches_torch(exported: Exported) -> None:
    model = exported.tts.model
    backend = OnnxTtsBackend(runtime.load(exported.root).export, CPU_ONLY)
    cond = TorchTtsBackend(model).condition(np.arange(4, 20), voice=0).cond
    blocks_onnx, blocks_torch = backend.blocks(), TorchTtsBackend(model).blocks()
    state_onnx, state_torch = blocks_onnx.prepare(cond.numpy(), True), blocks_torch.prepare(cond, True)
    rng = np.random.default_rng(3)
    for start, size in ((0, 4), (4, 3), (7, 5)):
        block = rng.integers(-1, 32, size=(1, 3, size))
        for unconditional in (False, True, BOTH):
            actual, state_onnx = blocks_onnx.block_logits(block, start, (0, 1), state_onnx, unconditional)
            expected, state_torch = blocks_torch.block_logits(block, start, (0, 1), state_torch, unconditional)
            _close(actual, expected)
        done = rng.integers(0, 32, size=(1, 3, size))
        state_onnx = blocks_onnx.commit(done, start, state_onnx)
        state_torch = blocks_torch.commit(done, start, state_torch)
    assert next(iter(state_onnx.cache.values())).shape[2] == 12


def test_asr_encoder_and_decoders_match_torch(exported: Exported) -> None:
    model = exported.asr.model
    backend = OnnxAsrBackend(runtime.load(exported.root).export, CPU_ONLY)
    mel, mel_lengths = torch.randn(3, 80, 93), torch.tensor([93, 61, 20])
    for chunk, left in ((0, 0), (4, 0), (3, 2)):
        encoded = backend.encode(mel.numpy(), mel_lengths.numpy(), chunk, left)
        with torch.no_grad():
            hidden, lengths = model.encode(mel, mel_lengths, chunk, left)
        assert np.array_equal(encoded.lengths, lengths.numpy())
        for row, length in enumerate(lengths.tolist()):
            _close(encoded.hidden[row, :length], hidden[row, :length])
            _close(encoded.ctc_log_probs[row, :length], model.ctc_log_probs(hidden)[row, :length])
            _close(encoded.alphas[row, :length], model.predictor(hidden)[row, :length])
    encoded = backend.encode(mel.numpy(), mel_lengths.numpy(), 0, 0)
    acoustic, counts = np.random.default_rng(1).normal(size=(3, 6, 32)).astype(np.float32), np.array([6, 4, 1])
    with torch.no_grad():
        expected = model.parallel_decoder(torch.from_numpy(acoustic), torch.from_numpy(counts),
                                          torch.from_numpy(encoded.hidden), torch.from_numpy(encoded.lengths))
    actual = backend.paraformer(acoustic, counts, encoded.hidden, encoded.lengths)
    for row, count in enumerate(counts):
        _close(actual[row, :count], expected[row, :count])
    # AR decoder: step by step, with a beam-style reorder in between
    onnx_step, torch_step = backend.attention_step(), TorchAttentionStep(model.attention_decoder)
    state_onnx = onnx_step.prepare(encoded.hidden, encoded.lengths)
    state_torch = torch_step.prepare(encoded.hidden, encoded.lengths)
    for t, tokens in enumerate(([[2], [2], [2]], [[5], [6], [7]], [[8, 9], [10, 11], [12, 13]])):
        actual, state_onnx = onnx_step.step(np.array(tokens), state_onnx)
        expected, state_torch = torch_step.step(np.array(tokens), state_torch)
        _close(actual, expected)
        if t == 1:
            rows = np.array([2, 2, 0])
            state_onnx, state_torch = onnx_step.select(state_onnx, rows), torch_step.select(state_torch, rows)


def test_block_decoder_matches_torch(exported: Exported) -> None:
    model = exported.asr.model
    onnx_blocks = OnnxAsrBackend(runtime.load(exported.root).export, CPU_ONLY).block_decoder()
    torch_blocks = TorchBlockDecoder(model.parallel_decoder)
    state_onnx, state_torch = onnx_blocks.init_state(), torch_blocks.init_state()
    rng = np.random.default_rng(2)
    for frames, tokens in ((5, 2), (3, 1), (4, 3)):
        memory = rng.normal(size=(frames, 32)).astype(np.float32)
        state_onnx, state_torch = onnx_blocks.add_memory(memory, state_onnx), torch_blocks.add_memory(memory,
                                                                                                      state_torch)
        acoustic = rng.normal(size=(tokens, 32)).astype(np.float32)
        _close(onnx_blocks.decode_block(acoustic, state_onnx), torch_blocks.decode_block(acoustic, state_torch))
        labels = rng.integers(4, 30, size=tokens)
        state_onnx = onnx_blocks.add_context(labels, state_onnx)
        state_torch = torch_blocks.add_context(labels, state_torch)


def test_codec_runtime_matches_native(exported: Exported, rt: runtime.Runtime) -> None:
    native, onnx_codec = exported.codec, rt.codec()
    assert onnx_codec.info == native.info
    wav = speech_like(0.5, 3)[None, None, :7000]  # not whole frames: padded like NativeCodec
    codes = onnx_codec.encode(wav, 3)
    assert np.array_equal(codes, native.encode(wav, 3).numpy())
    _close(onnx_codec.decode(codes), native.decode(codes), atol=1e-4)
    state_onnx, state_native = onnx_codec.init_decode_state(1), native.init_decode_state(1)
    for piece in (codes[..., :2], codes[..., 2:7], codes[..., 7:]):
        audio_onnx, state_onnx = onnx_codec.decode_step(piece, state_onnx)
        audio_native, state_native = native.decode_step(piece, state_native)
        _close(audio_onnx, audio_native)
    hop = native.info.hop_length
    state_onnx, state_native = onnx_codec.init_encode_state(1), native.init_encode_state(1)
    for piece in (wav[..., :3 * hop], wav[..., 3 * hop:8 * hop]):
        step_onnx, state_onnx = onnx_codec.encode_step(piece, state_onnx)
        step_native, state_native = native.encode_step(piece, state_native)
        assert np.array_equal(step_onnx, step_native.numpy())
    with pytest.raises(ConfigError, match="whole frames"):
        onnx_codec.encode_step(wav[..., :100], state_onnx)


# ----------------------------------------------------------------------------- pipelines on both backends


@pytest.mark.parametrize("decoder,fine_guidance", [("nar", None), ("semiar", None), ("ar", None), ("semiar", 2.0)])
def test_synthesizer_on_onnx_equals_pytorch(exported: Exported, rt: runtime.Runtime, decoder: str,
                                            fine_guidance: float | None) -> None:
    torch_synth = Synthesizer(exported.tts, exported.codec)
    onnx_synth = rt.synthesizer()
    assert onnx_synth.voices == torch_synth.voices and onnx_synth.sample_rate == torch_synth.sample_rate
    guidance = 0.0 if decoder == "ar" or fine_guidance is not None else 1.0  # semiar + fine_guidance: fine pass alone
    options = SynthesisOptions(voice="espeak-us", decoder=decoder, seed=3, guidance=guidance,
                               fine_guidance=fine_guidance)
    expected, actual = torch_synth.synthesize(TEXT, options), onnx_synth.synthesize(TEXT, options)
    assert [s.frames for s in actual.sentences] == [s.frames for s in expected.sentences]
    _close(actual.audio, expected.audio, atol=1e-3)
    streamed = np.concatenate([chunk.audio for chunk in onnx_synth.stream(TEXT, options)])
    _close(streamed, actual.audio, atol=1e-3)


@pytest.mark.parametrize("decoder", ["ctc", "paraformer", "ar", "semiar"])
def test_recognizer_on_onnx_equals_pytorch(exported: Exported, rt: runtime.Runtime, decoder: str) -> None:
    audios = [speech_like(2.0, 1), speech_like(1.3, 2), speech_like(0.05, 3)]
    options = RecognizerOptions(decoder=decoder, chunk=4, beam_size=2 if decoder == "ar" else None)
    shipped_lm = load_lm(None, exported.asr.vocabulary)  # the runtime's default, for ctc and ar
    expected = TorchRecognizer(exported.asr, options, shipped_lm if decoder in LM_DECODERS else None).transcribe_batch(audios)
    actual = rt.recognizer(options).transcribe_batch(audios)
    assert [t.text for t in actual] == [t.text for t in expected]
    assert [t.words for t in actual] == [t.words for t in expected]
    assert decoder == "ctc" or any(t.text for t in actual)  # a random CTC head says blank everywhere


@pytest.mark.parametrize("decoder", ["semiar", "ctc"])
def test_streaming_recognition_on_onnx_equals_pytorch(exported: Exported, rt: runtime.Runtime,
                                                      decoder: str) -> None:
    audio = speech_like(2.5, 4)
    options = RecognizerOptions(decoder=decoder, chunk=4)
    shipped_lm = load_lm(None, exported.asr.vocabulary)  # the runtime's default, for ctc
    sessions = [TorchRecognizer(exported.asr, options, shipped_lm if decoder == "ctc" else None).stream(),
                rt.recognizer(options).stream()]
    interims: list[list[str]] = [[], []]
    for start in range(0, len(audio), 2900):
        for session, texts in zip(sessions, interims):
            texts.append(session.accept_audio(audio[start:start + 2900]).text)
    finals = [session.finish() for session in sessions]
    assert interims[0] == interims[1]
    assert finals[0] == finals[1] and (finals[1].text or decoder == "ctc")
    with pytest.raises(ConfigError, match="left context"):
        rt.recognizer(RecognizerOptions(decoder=decoder, chunk=4, left_chunks=2)).stream().accept_audio(audio)


def test_streaming_encoder_graphs_match_torch(exported: Exported, rt: runtime.Runtime) -> None:
    from tokenspeech.asr.torch_backend import TorchAsrBackend

    backends = [TorchAsrBackend(exported.asr.model, exported.asr.mel), OnnxAsrBackend(rt.export, CPU_ONLY)]
    states = [b.init_stream() for b in backends]
    mel = np.random.default_rng(5).normal(size=(1, 80, 120)).astype(np.float32)
    produced = 0
    for start, stop in ((0, 5), (5, 31), (31, 32), (32, 90), (90, 120)):
        final = stop == 120
        (expected, states[0]), (actual, states[1]) = (b.encode_stream(mel[..., start:stop], s, 4, 0, final)
                                                      for b, s in zip(backends, states))
        assert actual.hidden.shape == expected.hidden.shape
        _close(actual.hidden, expected.hidden)
        _close(actual.ctc_log_probs, expected.ctc_log_probs)
        _close(actual.alphas, expected.alphas)
        produced += actual.hidden.shape[1]
    assert produced == (120 - 7) // 4 + 1


def test_onnx_streams_stepped_together_equal_each_stepped_alone(exported: Exported, rt: runtime.Runtime) -> None:
    """Three streams at different positions: their chunks batched through past_lengths, as the server runs them."""
    from tokenspeech.decoding.calls import Call

    backend = OnnxAsrBackend(rt.export, CPU_ONLY)
    rng = np.random.default_rng(6)
    mels = [rng.normal(size=(1, 80, n)).astype(np.float32) for n in (150, 97, 121)]
    alone, together = [backend.init_stream() for _ in mels], [backend.init_stream() for _ in mels]
    for index, size in enumerate((13, 37, 5)):  # different histories first
        _, alone[index] = backend.encode_stream(mels[index][..., :size], alone[index], 4, 0, False)
        _, together[index] = backend.encode_stream(mels[index][..., :size], together[index], 4, 0, False)
    starts = [13, 37, 5]
    for final in (False, False, True):
        pieces = [m[..., s:] if final else m[..., s:s + 30] for m, s in zip(mels, starts)]
        expected = []
        for index, piece in enumerate(pieces):
            encoded, alone[index] = backend.encode_stream(piece, alone[index], 4, 0, final)
            expected.append(encoded)
        calls = [Call(backend.encode_stream, (piece, state, 4, 0, final)) for piece, state in zip(pieces, together)]
        assert len({backend.batch_key(call) for call in calls}) == 1
        batched = backend.run_batch(calls)
        together = [state for _, state in batched]
        for (encoded, _), reference in zip(batched, expected):
            assert encoded.hidden.shape == reference.hidden.shape
            _close(encoded.hidden, reference.hidden)
            _close(encoded.ctc_log_probs, reference.ctc_log_probs)
        starts = [s + 30 for s in starts]
    assert [state.pending.shape[1] for state in together] == [0, 0, 0]


def test_io_binding_path_gives_the_same_results(exported: Exported) -> None:
    """The CUDA path (caches kept as OrtValues between steps) exercised on the CPU provider."""
    bound = runtime.load(exported.root, RuntimeOptions(provider="cpu", intra_op_threads=1, io_binding=True))
    plain = runtime.load(exported.root, CPU_ONLY)
    options = SynthesisOptions(decoder="ar", seed=1)
    _close(bound.synthesizer().synthesize("Bound caches.", options).audio,
           plain.synthesizer().synthesize("Bound caches.", options).audio, atol=1e-6)
    audio = speech_like(1.5, 8)
    for decoder, beam in (("ar", 3), ("semiar", 1)):
        recognizer_options = RecognizerOptions(decoder=decoder, beam_size=beam, chunk=4)
        assert (bound.recognizer(recognizer_options).transcribe_batch([audio])
                == plain.recognizer(recognizer_options).transcribe_batch([audio]))
    session_bound, session_plain = (r.recognizer(RecognizerOptions(decoder="semiar", chunk=4)).stream()
                                    for r in (bound, plain))
    session_bound.accept_audio(audio), session_plain.accept_audio(audio)
    assert session_bound.finish() == session_plain.finish()


# ----------------------------------------------------------------------------- providers


def test_provider_choice_and_unavailable_cuda_is_reported(exported: Exported,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    assert choose_providers(RuntimeOptions(provider="cpu"), [CUDA, CPU]) == [CPU]
    assert choose_providers(RuntimeOptions(provider="auto"), [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers(RuntimeOptions(provider="auto"), [CPU]) == [CPU]
    assert choose_providers(RuntimeOptions(provider="cuda"), [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(ModelLoadError, match="CUDA"):
        choose_providers(RuntimeOptions(provider="cuda"), [CPU])
    with pytest.raises(ConfigError, match="provider"):
        RuntimeOptions(provider="gpu")
    with pytest.raises(ConfigError, match="thread"):
        RuntimeOptions(intra_op_threads=-1)
    import onnxruntime

    if CUDA not in onnxruntime.get_available_providers():
        with pytest.raises(ModelLoadError, match="CUDA"):
            runtime.load(exported.root, RuntimeOptions(provider="cuda")).codec().decode(np.zeros((1, 1, 2), int))
    with caplog.at_level(logging.INFO, logger="tokenspeech.runtime.sessions"):
        runtime.load(exported.root, CPU_ONLY).codec().decode(np.zeros((1, 2, 3), dtype=np.int64))
    assert "runs on CPUExecutionProvider" in caplog.text


# ----------------------------------------------------------------------------- CLI, compression, imports


def test_cli_exports_int8_and_fp16(tmp_path: Path, exported: Exported,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    models = tmp_path / "models"
    save_asr_model(exported.asr.model, models / "asr", exported.asr.vocabulary, exported.asr.mel)
    assert main(["export", str(models / "asr.safetensors"), "-o", str(tmp_path / "int8"), "--quantize", "int8"]) == 0
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["quantize"] == "int8" and set(manifest["models"]) == {"asr"}
    audio = speech_like(1.0, 5)
    quantized = runtime.load(tmp_path / "int8", CPU_ONLY).recognizer(RecognizerOptions(decoder="ctc"))
    assert isinstance(quantized.transcribe_batch([audio])[0].text, str)
    save_native_codec(exported.codec.model, exported.codec.config, models / "tscodec")
    assert main(["export", str(models / "tscodec.json"), "-o", str(tmp_path / "fp16"), "--fp16"]) == 0
    codec = runtime.load(tmp_path / "fp16", CPU_ONLY).codec()
    codes = np.random.default_rng(0).integers(0, 32, size=(1, 4, 5))
    _close(codec.decode(codes), exported.codec.decode(codes), atol=5e-2)
    assert main(["export", "tscodec", "-o", str(tmp_path / "x"), "--quantize", "int8", "--fp16"]) == 2
    assert main(["export", str(tmp_path / "nothing.safetensors"), "-o", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err
    assert "not both" in errors and "model card" in errors


def test_runtime_and_export_help_do_not_import_torch() -> None:
    code = ("import sys, tokenspeech.runtime, tokenspeech.runtime.tts, tokenspeech.runtime.asr, "
            "tokenspeech.runtime.codec, tokenspeech.tts.pipeline, tokenspeech.asr.engine; "
            "from tokenspeech.cli import build_parser; build_parser().parse_args(['export', 'tts', '-o', 'x']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
