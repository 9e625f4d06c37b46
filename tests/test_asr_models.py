"""The ASR network, its PyTorch decoding adapters, the recogniser, save/load and the training recipe.

Tiny random models only; every test runs on one CPU thread in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenspeech.asr.align import align_phonemes
from tokenspeech.asr.model_io import AsrBundle, load_asr_model, save_asr_model
from tokenspeech.asr.recognizer import RecognizerOptions, StreamingSession, TorchRecognizer
from tokenspeech.asr.torch_backend import TorchAttentionStep, TorchBlockDecoder
from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.cif import cif_fire
from tokenspeech.decoding.streaming_asr import SemiARStreamer
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.features import MelConfig
from tokenspeech.models.asr import AsrModelConfig
from tokenspeech.models.asr_heads import block_masks, cif_weights, fire_frames, scale_alphas
from tokenspeech.models.frontend import LogMel
from tokenspeech.training.asr import AsrTrainOptions, train_asr

from tiny_models import TINY_ASR as TINY
from tiny_models import speech_like, tiny_asr_bundle

FIXTURE = Path(__file__).parent / "fixtures" / "corpus"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle() -> AsrBundle:
    return tiny_asr_bundle()


def test_shapes(bundle: AsrBundle) -> None:
    model = bundle.model
    mel = torch.randn(2, 80, 101)
    encoded, lengths = model.encode(mel, torch.tensor([101, 60]))
    assert encoded.shape == (2, 24, 32) and lengths.tolist() == [24, 14]
    assert model.ctc_log_probs(encoded).shape == (2, 24, 32)
    assert model.phoneme_log_probs(encoded).shape == (2, 24, 12)
    assert model.predictor(encoded).shape == (2, 24)
    logits = model.attention_decoder(torch.ones(2, 5, dtype=torch.long), torch.tensor([5, 3]), encoded, lengths)
    assert logits.shape == (2, 5, 32)
    assert model.parallel_decoder(torch.randn(2, 7, 32), torch.tensor([7, 4]), encoded, lengths).shape == (2, 7, 32)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        AsrModelConfig(decoders=("paraformer",))
    with pytest.raises(ConfigError):
        AsrModelConfig(dim=30, heads=4)
    assert AsrModelConfig.from_json(TINY.to_json()) == TINY


@pytest.mark.parametrize("chunk,left", [(4, 0), (3, 2), (1, 0)])
def test_streaming_encoder_equals_offline_with_chunk_mask(bundle: AsrBundle, chunk: int, left: int) -> None:
    encoder = bundle.model.encoder
    mel = torch.randn(1, 80, 157)
    offline, _ = encoder(mel, torch.tensor([157]), chunk, left)
    state, pieces = encoder.init_state(1), []
    with torch.no_grad():
        for start in range(0, 157, 11):
            out, state = encoder.step(mel[:, :, start:start + 11], state, chunk, left)
            pieces.append(out)
        out, state = encoder.step(mel[:, :, :0], state, chunk, left, final=True)
    streamed = torch.cat(pieces + [out], dim=1)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk,left", [(4, 0), (3, 2)])
def test_streams_stepped_together_equal_each_stepped_alone(bundle: AsrBundle, chunk: int, left: int) -> None:
    """Three streams at different positions (different histories and piece sizes), batched chunk by chunk."""
    encoder = bundle.model.encoder
    torch.manual_seed(0)
    mels = [torch.randn(1, 80, n) for n in (157, 90, 131)]
    alone = [encoder.init_state(1) for _ in mels]
    together = [encoder.init_state(1) for _ in mels]
    with torch.no_grad():
        for index, size in enumerate((13, 29, 7)):  # stagger the histories first
            _, alone[index] = encoder.step(mels[index][:, :, :size], alone[index], chunk, left)
            _, together[index] = encoder.step(mels[index][:, :, :size], together[index], chunk, left)
        starts = [13, 29, 7]
        for final in (False, False, False, True):
            pieces = [m[:, :, s:s + 40] if not final else m[:, :, s:] for m, s in zip(mels, starts)]
            expected = []
            for index, piece in enumerate(pieces):
                out, alone[index] = encoder.step(piece, alone[index], chunk, left, final=final)
                expected.append(out)
            batched = encoder.step_streams(pieces, together, chunk, left, [final] * 3)
            together = [state for _, state in batched]
            for (out, state), reference, own in zip(batched, expected, alone):
                assert out.shape == reference.shape and state.frames == own.frames
                torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
            starts = [s + 40 for s in starts]
    assert [state.pending.shape[1] for state in together] == [0, 0, 0]


def test_chunk_mask_hides_the_future(bundle: AsrBundle) -> None:
    encoder = bundle.model.encoder
    mel = torch.randn(1, 80, 7 + 4 * 15)  # 16 encoder frames, chunks of 4
    changed = mel.clone()
    changed[:, :, 4 * 8:] += torch.randn_like(changed[:, :, 4 * 8:])  # alters encoder frames >= 7 (context 7)
    a, _ = encoder(mel, torch.tensor([mel.shape[2]]), chunk=4)
    b, _ = encoder(changed, torch.tensor([mel.shape[2]]), chunk=4)
    torch.testing.assert_close(a[:, :4], b[:, :4])


def test_torch_cif_matches_numpy_and_scales_to_target() -> None:
    alphas = torch.tensor([[0.4, 0.8, 0.3, 0.9, 0.6], [0.5, 0.5, 0.5, 0.2, 0.0]])
    hidden = torch.randn(2, 5, 3)
    weights = cif_weights(alphas, torch.tensor([3, 1]), 3)
    embeddings = weights @ hidden
    expected = cif_fire(alphas[0].numpy(), hidden[0].numpy())
    np.testing.assert_allclose(embeddings[0].numpy(), expected.embeddings, atol=1e-5)
    assert fire_frames(weights)[0].tolist() == expected.fires.tolist()
    scaled = scale_alphas(alphas, torch.tensor([5, 3]), torch.tensor([4, 2]))
    torch.testing.assert_close(scaled.sum(1), torch.tensor([4.0, 2.0]))
    assert float(scaled[1, 3:].abs().sum()) == 0.0  # padded frames carry no weight
    full = cif_weights(scaled, torch.tensor([4, 2]), 4)
    torch.testing.assert_close(full.sum(2), torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]]))


def test_block_masks_follow_chunks() -> None:
    fire = torch.tensor([[0, 3, 4, 9]])
    self_mask, memory_mask = block_masks(fire, torch.tensor([4]), torch.tensor([10]), chunk=4, memory_frames=10)
    assert self_mask[0, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert memory_mask[0, 0].sum(1).tolist() == [4, 4, 8, 10]


def test_ar_adapter_cache_matches_teacher_forcing_and_beam_runs(bundle: AsrBundle) -> None:
    model = bundle.model
    encoded, lengths = model.encode(torch.randn(2, 80, 81), torch.tensor([81, 50]))
    tokens = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10]])
    full = model.attention_decoder(tokens, torch.tensor([4, 4]), encoded, lengths)
    adapter = TorchAttentionStep(model.attention_decoder)
    state, steps = adapter.prepare(encoded, lengths), []
    for t in range(4):
        logits, state = adapter.step(tokens[:, t:t + 1].numpy(), state)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full.detach().numpy(), atol=1e-4)
    vocab = bundle.vocabulary
    bos = np.full(2, vocab.bos_id)
    greedy = ARDecoder(ARDecodingOptions(max_length=12, eos_id=vocab.eos_id)).run(
        adapter, adapter.prepare(encoded, lengths), bos)
    # A beam of one follows the argmax path: the beam search gives exactly the greedy result.
    one_beam = ARDecoder(ARDecodingOptions(max_length=12, eos_id=vocab.eos_id, beam_size=1))
    for row in range(2):
        single = adapter.select(adapter.prepare(encoded, lengths), np.array([row]))
        tokens = one_beam._beam(adapter, single, vocab.bos_id).tokens
        assert tokens == greedy[row].tokens
    beams = ARDecoder(ARDecodingOptions(max_length=12, eos_id=vocab.eos_id, beam_size=3)).run(
        adapter, adapter.prepare(encoded, lengths), bos)
    assert len(beams) == 2 and all(len(b.tokens) <= 12 for b in beams)


@pytest.mark.parametrize("decoder", ["ctc", "paraformer", "ar", "semiar"])
def test_recognizer_batches_and_word_times(bundle: AsrBundle, decoder: str) -> None:
    audios = [speech_like(2.0, 1), speech_like(1.2, 2), speech_like(0.05, 3)]
    recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder=decoder, chunk=4))
    batch = recognizer.transcribe_batch(audios)
    alone = [recognizer.transcribe_batch([a])[0] for a in audios]
    assert [t.text for t in batch] == [t.text for t in alone]  # padding does not change results
    for transcript, audio in zip(batch, audios):
        assert transcript.text == transcript.text.strip()
        times = [(w.start, w.end) for w in transcript.words]
        assert all(0 <= s <= e <= len(audio) / 16000 for s, e in times)
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(times))
        if decoder != "ar":
            assert [w.word for w in transcript.words] == transcript.text.split()


def test_ar_without_ctc_weight_is_the_attention_decoder_alone(bundle: AsrBundle) -> None:
    audio = speech_like(1.5, 7)
    alone = TorchRecognizer(bundle, RecognizerOptions(decoder="ar", ctc_weight=0.0, beam_size=1))
    mel, lengths = alone.features([audio])
    encoded = alone.backend.encode(mel, lengths, 0, 0)
    adapter = alone.backend.attention_step()
    vocab = bundle.vocabulary
    max_length = max(2, int(encoded.hidden.shape[1] * 0.04 * 40))
    greedy = ARDecoder(ARDecodingOptions(max_length=max_length, eos_id=vocab.eos_id)).run(
        adapter, adapter.prepare(encoded.hidden, encoded.lengths), np.array([vocab.bos_id]))[0]
    assert alone.transcribe_batch([audio])[0].text == " ".join(vocab.decode(greedy.tokens).split())
    joint = TorchRecognizer(bundle, RecognizerOptions(decoder="ar")).transcribe_batch([audio])[0]
    assert isinstance(joint.text, str)
    with pytest.raises(ConfigError, match="ctc_weight"):
        RecognizerOptions(decoder="ar", ctc_weight=1.5)
    with pytest.raises(ConfigError, match="max_seconds"):
        RecognizerOptions(max_seconds=0)
    with pytest.raises(ConfigError, match="tail_threshold"):
        RecognizerOptions(tail_threshold=0)


def test_ctc_beam_option_runs(bundle: AsrBundle) -> None:
    recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="ctc", beam_size=4))
    assert isinstance(recognizer.transcribe_batch([speech_like(1.0)])[0].text, str)


def test_semiar_streaming_equals_chunked_batch_and_grows(bundle: AsrBundle) -> None:
    audio = speech_like(3.0, 4)
    recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="semiar", chunk=4))
    session = recognizer.stream()
    rng = np.random.default_rng(0)
    interims, start = [], 0
    while start < len(audio):
        size = int(rng.integers(200, 3000))
        interims.append(session.accept_audio(audio[start:start + size]).text)
        start += size
    final = session.finish().text
    assert all(final.startswith(t) for t in interims)
    assert all(b.startswith(a) for a, b in itertools.pairwise(interims))
    assert len(final) > 0
    assert final == recognizer.transcribe_batch([audio])[0].text
    with pytest.raises(ConfigError):
        session.accept_audio(audio[:100])


def test_semiar_one_chunk_equals_paraformer(bundle: AsrBundle) -> None:
    audio = speech_like(2.5, 5)
    paraformer = TorchRecognizer(bundle, RecognizerOptions(decoder="paraformer"))
    mel, lengths = paraformer.features([audio])
    encoded, _ = bundle.model.encode(torch.from_numpy(mel), torch.from_numpy(lengths))
    frames = encoded[0].detach().numpy()
    backend = TorchBlockDecoder(bundle.model.parallel_decoder)
    streamer = SemiARStreamer(backend, backend.init_state(), chunk=len(frames))
    streamer.push(frames, bundle.model.predictor(encoded)[0].detach().numpy())
    text = " ".join(bundle.vocabulary.decode(streamer.finish().tokens).split())
    assert text == paraformer.transcribe_batch([audio])[0].text


def test_ctc_streaming_session(bundle: AsrBundle) -> None:
    audio = speech_like(2.0, 6)
    recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="ctc", chunk=4))
    session = StreamingSession(recognizer, "ctc")
    for start in range(0, len(audio), 1000):
        session.accept_audio(audio[start:start + 1000])
    final = session.finish()
    assert all(w.end <= 2.0 for w in final.words)


def test_save_load_round_trip_fp16(bundle: AsrBundle, tmp_path: Path) -> None:
    path = save_asr_model(bundle.model, tmp_path / "tiny", bundle.vocabulary, bundle.mel, bundle.phonemes,
                          training={"corpus": "fixture"}, metrics={"dev_wer": 1.0})
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert path.name == "tiny.safetensors" and card["weights_dtype"] == "float16"
    loaded = load_asr_model(tmp_path / "tiny")
    assert loaded.model.config == bundle.model.config and loaded.phonemes == bundle.phonemes
    mel = LogMel(bundle.mel)(torch.from_numpy(speech_like(1.0))[None])
    a = bundle.model.ctc_log_probs(bundle.model.encode(mel, torch.tensor([mel.shape[2]]))[0])
    b = loaded.model.ctc_log_probs(loaded.model.encode(mel, torch.tensor([mel.shape[2]]))[0])
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


def test_missing_or_mismatched_weights(bundle: AsrBundle, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_asr_model(tmp_path / "nothing")
    save_asr_model(bundle.model, tmp_path / "m", bundle.vocabulary, bundle.mel)
    card = json.loads((tmp_path / "m.json").read_text())
    card["config"]["dim"] = 64
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="do not match"):
        load_asr_model(tmp_path / "m")


def test_align_phonemes_durations(bundle: AsrBundle) -> None:
    audio = speech_like(1.5)
    ids = bundle.phonemes.encode("abcabb")
    durations = align_phonemes(bundle, audio, ids)
    frames = (MelConfig().num_frames(len(audio)) - 7) // 4 + 1
    assert durations.shape == (6,) and durations.min() >= 1 and durations.sum() == frames


def _options(out: Path, steps: int, **overrides) -> AsrTrainOptions:
    model = replace(TINY, phoneme_vocab_size=0)
    return AsrTrainOptions(corpus=FIXTURE, out=out, steps=steps, max_batch_seconds=24.0, max_utterance_seconds=12.0,
                           threads=1, model=model, lr=3e-3, warmup=3, log_every=1, checkpoint_every=3,
                           export_every=1000, eval_utterances=2, **{"ctc_warmup_steps": 0, **overrides})


def _log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_smoke_loss_decreases_and_exports(tmp_path: Path) -> None:
    summary = train_asr(_options(tmp_path, 30))
    rows = [r for r in _log_rows(tmp_path) if "ctc" in r]
    assert summary["steps"] == 30 and len(rows) == 30
    first, last = np.mean([r["ctc"] for r in rows[:5]]), np.mean([r["ctc"] for r in rows[-5:]])
    assert last < first and all(math.isfinite(r["total"]) for r in rows)
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "asr.safetensors").is_file()
    card = json.loads((tmp_path / "asr.json").read_text())
    assert card["training"]["steps"] == 30 and "dev_wer_ctc_greedy" in card["metrics"]
    assert card["phoneme_vocabulary"]  # the fixture has phonemes: the head is trained


def test_ctc_warmup_trains_only_the_encoder_and_ctc_heads_then_everything(tmp_path: Path) -> None:
    from tokenspeech.training.asr import _setup

    options = _options(tmp_path, 3, ctc_warmup_steps=3)
    initial = {k: v.clone() for k, v in _setup(options).model.state_dict().items()}
    train_asr(options)
    warm = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
    rows = [r for r in _log_rows(tmp_path) if "ctc" in r]
    assert [r["chunk"] for r in rows] == [0, 0, 0] and not any("paraformer" in r or "ar" in r for r in rows)
    heads = [k for k in initial if k.startswith(("attention_decoder.", "parallel_decoder.", "predictor."))]
    assert heads and all(torch.equal(initial[k], warm[k]) for k in heads)
    assert any(not torch.equal(initial[k], warm[k]) for k in initial if k.startswith("encoder.blocks."))
    train_asr(_options(tmp_path, 5, ctc_warmup_steps=3, resume=True))
    rows = [r for r in _log_rows(tmp_path) if "ctc" in r]
    assert all("paraformer" in r and "ar" in r for r in rows[3:])
    done = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
    assert any(not torch.equal(warm[k], done[k]) for k in heads)


def test_bf16_autocast_training_gives_float32_weights_and_the_same_first_losses(tmp_path: Path) -> None:
    train_asr(_options(tmp_path / "fp32", 4))
    train_asr(_options(tmp_path / "bf16", 4, bf16=True))
    fp32 = [r for r in _log_rows(tmp_path / "fp32") if "ctc" in r]
    bf16 = [r for r in _log_rows(tmp_path / "bf16") if "ctc" in r]
    assert len(bf16) == 4 and all(math.isfinite(r["total"]) for r in bf16)
    # the same batch and weights at step 1: bf16 rounding moves the losses by well under 5 %
    for name in ("ctc", "paraformer", "ar", "total"):
        assert bf16[0][name] == pytest.approx(fp32[0][name], rel=0.05)
    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=False)["model"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert json.loads((tmp_path / "bf16" / "asr.json").read_text())["training"]["bf16_autocast"] is True


@pytest.mark.slow
def test_training_resumes_exactly(tmp_path: Path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_asr(_options(straight, 8))
    train_asr(_options(interrupted, 8, stop_at_step=6))
    train_asr(_options(interrupted, 8, resume=True))
    rows = _log_rows(interrupted)
    assert [r["step"] for r in rows if "ctc" in r] == [1, 2, 3, 4, 5, 6, 7, 8]
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(interrupted / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    for name, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][name], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train_asr(_options(tmp_path / "empty", 2, resume=True))


def test_sigterm_stops_training_after_the_step_with_a_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import os
    import signal

    from tokenspeech.training import asr as asr_training

    original, calls = asr_training.train_step, []

    def step_then_signal(run):
        values = original(run)
        calls.append(run.step)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from another shell
        return values

    monkeypatch.setattr(asr_training, "train_step", step_then_signal)
    handler = signal.getsignal(signal.SIGTERM)
    summary = train_asr(_options(tmp_path, 8))
    assert summary["steps"] == 2
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is handler  # the training's handler is gone again
    train_asr(_options(tmp_path, 3, resume=True))  # and the run goes on from there
    assert [r["step"] for r in _log_rows(tmp_path) if "ctc" in r] == [1, 2, 3]


def test_init_from_an_export_continues_at_its_step_and_refuses_unknown_phonemes(tmp_path: Path,
                                                                                monkeypatch) -> None:
    from tokenspeech.training import asr as asr_training

    first, second = tmp_path / "first", tmp_path / "second"
    train_asr(_options(first, 3))  # exports at its last step
    exported = {k: v.float() for k, v in load_asr_model(first / "asr").model.state_dict().items()}
    seen: dict = {}
    original = asr_training.train_step

    def record_start(run):
        seen.setdefault("weights", {k: v.clone() for k, v in run.model.state_dict().items()})
        values = original(run)
        seen.setdefault("lr", []).append(values["lr"])
        return values

    monkeypatch.setattr(asr_training, "train_step", record_start)
    summary = train_asr(_options(second, 6, init_from=first / "asr.safetensors"))
    assert summary["steps"] == 6
    assert [r["step"] for r in _log_rows(second) if "ctc" in r] == [4, 5, 6]
    for name, value in exported.items():
        torch.testing.assert_close(seen["weights"][name], value)
    assert seen["lr"][0] < seen["lr"][1]  # fresh optimiser moments: the rate ramps up again
    card = json.loads((second / "asr.json").read_text())
    assert card["training"]["steps"] == 6 and card["training"]["init_from"]["step"] == 3

    card = json.loads((first / "asr.json").read_text())
    card["phoneme_vocabulary"] = card["phoneme_vocabulary"][:-1]
    (first / "asr.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="phoneme symbols"):
        train_asr(_options(tmp_path / "third", 6, init_from=first / "asr"))


def test_restart_schedule_starts_a_new_cycle_at_the_init_step(tmp_path: Path) -> None:
    from tokenspeech.training.asr import _lr_factor

    plain = replace(_options(tmp_path, 10_000, init_from=tmp_path / "asr"), warmup=100)
    warm = replace(plain, restart_schedule=True)
    # on the original schedule, step 8,000 of 10,000 is late: a small rate even after the ramp
    assert _lr_factor(8_100, plain, init_step=8_000) < 0.2
    # a warm restart ramps up over --warmup steps from the init step to the full rate, then decays to 5 %
    assert _lr_factor(8_000, warm, init_step=8_000) == pytest.approx(0.01)
    assert _lr_factor(8_099, warm, init_step=8_000) == pytest.approx(1.0)
    assert _lr_factor(9_050, warm, init_step=8_000) == pytest.approx(0.525)
    assert _lr_factor(10_000, warm, init_step=8_000) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="restart_schedule"):
        _options(tmp_path, 10, restart_schedule=True)


def test_cli_builds_options(tmp_path: Path) -> None:
    import argparse

    from tokenspeech.training.asr_cli import _options, configure_asr

    parser = argparse.ArgumentParser()
    configure_asr(parser.add_subparsers())
    args = parser.parse_args(["asr", "--corpus", str(FIXTURE), "--out", str(tmp_path), "--steps", "5",
                              "--decoders", "paraformer,semiar", "--dim", "64", "--vtlp-prob", "0.5"])
    options = _options(args)
    assert not options.restart_schedule and options.full_context_prob == 0.5
    assert options.model.decoders == ("ctc", "paraformer", "semiar") and options.model.dim == 64
    assert options.augment.vtlp_prob == 0.5 and options.steps == 5 and args.run.__name__ == "run_asr"
    clean = _options(parser.parse_args(["asr", "--corpus", str(FIXTURE), "--out", str(tmp_path), "--no-augment"]))
    assert clean.augment.noise_prob == 0 and clean.augment.vtlp_prob == 0
    warm = _options(parser.parse_args(["asr", "--corpus", str(FIXTURE), "--out", str(tmp_path),
                                       "--init-from", str(tmp_path / "asr"), "--restart-schedule",
                                       "--full-context-prob", "0.8", "--bf16"]))
    assert warm.restart_schedule and warm.init_from == tmp_path / "asr" and warm.full_context_prob == 0.8
    assert warm.bf16 and not options.bf16
    with pytest.raises(ConfigError, match="full_context_prob"):
        _options(parser.parse_args(["asr", "--corpus", str(FIXTURE), "--out", str(tmp_path),
                                    "--full-context-prob", "1.5"]))
