"""TTS: alignment, length regulation, the three decoders end to end, streaming, errors, artifacts, training, CLI.

Everything runs on tiny random models and a tiny random codec.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenspeech.codecs.native import save_native_codec
from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.masked import BOTH, MASK
from tokenspeech.errors import ConfigError, ModelLoadError, TextError
from tokenspeech.models.aligner import (
    Aligner,
    AlignerConfig,
    beta_binomial_prior,
    durations_to_frames,
    forward_sum_loss,
    monotonic_alignment,
)
from tokenspeech.models.tts import TtsModel, block_causal_mask, length_regulate, predicted_durations
from tokenspeech.tts.model_io import TtsBundle, load_tts_model, save_tts_model
from tokenspeech.tts.pipeline import DECODERS, MAX_TEXT_CHARS, SynthesisOptions, Synthesizer, split_sentences
from tokenspeech.tts.torch_backend import TorchTtsBackend

from tiny_models import FIXTURE, VOICES, tiny_codec, tiny_tts_bundle, tiny_tts_config

TEXT = "Hello there, this is a test. How are you today?"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle() -> TtsBundle:
    return tiny_tts_bundle()


@pytest.fixture(scope="module")
def synth(bundle: TtsBundle) -> Synthesizer:
    return Synthesizer(bundle, tiny_codec())


# ----------------------------------------------------------------------------- alignment


def test_mas_recovers_a_clear_path_and_durations_sum_to_the_frames() -> None:
    truth = np.array([3, 1, 5, 2, 4])
    frames = int(truth.sum())
    owner = np.repeat(np.arange(5), truth)
    log_probs = np.log(np.full((frames, 5), 0.02))
    log_probs[np.arange(frames), owner] = np.log(0.9)
    assert np.array_equal(monotonic_alignment(log_probs), truth)
    noisy = monotonic_alignment(np.random.default_rng(0).normal(size=(40, 12)))
    assert noisy.sum() == 40 and noisy.min() >= 1
    with pytest.raises(ConfigError):
        monotonic_alignment(np.zeros((3, 5)))


def test_durations_to_codec_frames_round_cumulative_sums() -> None:
    d100 = np.array([1, 1, 9, 2, 12, 1, 6])
    d25 = durations_to_frames(d100, 8)
    assert d25.sum() == 8 and d25.min() >= 0 and (d25 == 0).any()
    assert np.array_equal(np.cumsum(d25), np.rint(np.cumsum(d100) * 8 / d100.sum()).astype(int).clip(max=8))


def test_aligner_gives_log_distributions_and_a_finite_forward_sum_loss() -> None:
    torch.manual_seed(0)
    aligner = Aligner(AlignerConfig(num_phonemes=10, n_mels=8, text_dim=8, mel_dim=8, attention_dim=8))
    phonemes, lengths = torch.randint(0, 10, (2, 6)), torch.tensor([6, 4])
    mel, mel_lengths = torch.randn(2, 8, 20), torch.tensor([20, 13])
    log_attention = aligner(phonemes, lengths, mel, mel_lengths)
    torch.testing.assert_close(log_attention.exp().sum(-1), torch.ones(2, 20))
    assert log_attention[1, :, 4:].exp().max() < 1e-6
    loss = forward_sum_loss(log_attention, lengths, mel_lengths)
    loss.backward()
    assert torch.isfinite(loss)
    prior = np.exp(beta_binomial_prior(5, 30))
    np.testing.assert_allclose(prior.sum(1), 1.0, rtol=1e-5)
    assert prior[0].argmax() == 0 and prior[-1].argmax() == 4


# ----------------------------------------------------------------------------- model pieces


def test_length_regulator_repeats_skips_zero_durations_and_pads() -> None:
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    durations = torch.tensor([[2, 0, 1, 3], [1, 2, 0, 0]])
    x, index, lengths = length_regulate(h, durations)
    assert x.shape == (2, 6, 3) and lengths.tolist() == [6, 3]
    assert index[0].tolist() == [0, 0, 2, 3, 3, 3]
    torch.testing.assert_close(x[0, 2], h[0, 2])
    torch.testing.assert_close(x[1, :3], h[1, [0, 1, 1]])
    assert x[1, 3:].abs().sum() == 0


def test_rate_scales_predicted_durations() -> None:
    log_durations = torch.log1p(torch.tensor([[2.0, 3.0, 0.4, 5.0]]))
    assert predicted_durations(log_durations).sum() == 10
    assert predicted_durations(log_durations, rate=2.0).sum() == 5
    assert predicted_durations(log_durations, rate=0.5).sum() == 21


def test_block_causal_training_pass_equals_cached_blockwise_inference() -> None:
    torch.manual_seed(0)
    model = TtsModel(tiny_tts_config()).eval()
    frames, block = 11, 4
    cond = torch.randn(1, frames, 32)
    tokens = torch.randint(0, 32, (1, 3, frames))
    tokens[:, model.config.context_codebooks:] = model.config.mask_id  # how committed context looks
    with torch.no_grad():
        full = model.codec.heads(model.codec(tokens, cond, block_causal_mask(frames, torch.tensor([block]))))
    blocks = TorchTtsBackend(model).blocks()
    state = blocks.prepare(cond)
    numpy_tokens = np.where(tokens.numpy() == model.config.mask_id, MASK, tokens.numpy())
    for start in range(0, frames, block):
        piece = numpy_tokens[:, :, start:start + block]
        logits, state = blocks.block_logits(piece, start, [0, 1, 2], state)
        np.testing.assert_allclose(logits, full[:, :, start:start + block].numpy(), atol=1e-4, rtol=1e-4)
        state = blocks.commit(piece, start, state)
        assert state.cache.length == min(start + block, frames)


def test_a_guided_block_pass_equals_its_two_sides_and_commits_both_without_a_pass(monkeypatch) -> None:
    torch.manual_seed(0)
    model = TtsModel(tiny_tts_config()).eval()
    frames, block = 10, 4
    cond = torch.randn(1, frames, 32)
    tokens = np.random.default_rng(1).integers(0, 32, size=(1, 3, frames))
    tokens[:, model.config.context_codebooks:] = MASK  # the committed view: commit may keep the pass' keys
    blocks = TorchTtsBackend(model).blocks()
    one_sided, guided = blocks.prepare(cond, guidance=True), blocks.prepare(cond, guidance=True)
    passes = []
    step_into = model.codec.transformer.step_into

    def counting(x, streams):
        passes.append(x.shape[0])
        return step_into(x, streams)

    monkeypatch.setattr(model.codec.transformer, "step_into", counting)
    for start in range(0, frames, block):
        piece = tokens[:, :, start:start + block]
        conditional, one_sided = blocks.block_logits(piece, start, [0, 1], one_sided, False)
        unconditional, one_sided = blocks.block_logits(piece, start, [0, 1], one_sided, True)
        passes.clear()
        both, guided = blocks.block_logits(piece, start, [0, 1], guided, BOTH)
        assert passes == [2]  # one pass of two rows
        np.testing.assert_allclose(both, np.stack([conditional, unconditional]), atol=1e-5, rtol=1e-5)
        one_sided = blocks.commit(piece, start, one_sided)
        passes.clear()
        guided = blocks.commit(piece, start, guided)
        assert passes == []  # both sides' keys kept
        assert guided.cache.length == guided.uncond_cache.length == one_sided.cache.length


def test_a_guided_masked_pass_with_padding_equals_its_two_sides() -> None:
    torch.manual_seed(0)
    model = TtsModel(tiny_tts_config()).eval()
    masked = TorchTtsBackend(model).masked()
    state = masked.prepare(torch.randn(2, 9, 32), lengths=torch.tensor([9, 6]))
    tokens = np.random.default_rng(2).integers(-1, 32, size=(2, 3, 9))
    both, _ = masked.logits(tokens, (0, 2), state, BOTH)
    conditional, _ = masked.logits(tokens, (0, 2), state, False)
    unconditional, _ = masked.logits(tokens, (0, 2), state, True)
    assert both.shape == (2, *conditional.shape)
    np.testing.assert_allclose(both, np.stack([conditional, unconditional]), atol=1e-5, rtol=1e-5)


def test_ar_greedy_with_kv_cache_equals_full_recompute() -> None:
    torch.manual_seed(0)
    model = TtsModel(tiny_tts_config(ar_layers=2)).eval()
    frames = 9
    cond = torch.randn(1, frames, 32)
    step_model = TorchTtsBackend(model).ar()
    options = ARDecodingOptions(max_length=frames, eos_id=step_model.bos_id)
    cached = np.concatenate(list(ARDecoder(options).iterate(step_model, step_model.prepare(cond),
                                                            np.array([step_model.bos_id]))))
    previous = [step_model.bos_id]
    with torch.no_grad():
        for t in range(frames):
            logits = model.ar(torch.tensor([previous]), cond[:, :t + 1])
            previous.append(int(logits[0, -1].argmax()))
    assert cached.tolist() == previous[1:]


class _RecomputedArStep:
    """The AR LM as a StepModel without any cache: every step runs the whole prefix (the reference)."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model

    def step(self, tokens: np.ndarray, state: tuple[torch.Tensor, np.ndarray]) -> tuple[np.ndarray, tuple]:
        cond, previous = state
        prefix = np.concatenate([previous, tokens], axis=1)
        with torch.no_grad():
            logits = self.model.ar(torch.from_numpy(prefix), cond[:, :prefix.shape[1]])
        return logits[:, -tokens.shape[1]:].numpy(), (cond, prefix)

    def select(self, state: tuple[torch.Tensor, np.ndarray], rows: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        return state[0][torch.from_numpy(rows)], state[1][rows]


def test_ar_beam_search_over_kv_buffers_equals_recomputing_every_prefix() -> None:
    """Beams fork by :meth:`TorchArStep.select`; each kept row must carry its own keys and values."""
    torch.manual_seed(3)
    model = TtsModel(tiny_tts_config(ar_layers=2)).eval()
    with torch.no_grad():
        model.ar.embed.weight.normal_(0.0, 1.0)  # at init the tokens barely move the logits: make them count
    frames = 10
    cond = 0.1 * torch.randn(1, frames, 32)
    cached = TorchTtsBackend(model).ar()
    options = ARDecodingOptions(max_length=frames, eos_id=cached.bos_id, beam_size=3)
    result = ARDecoder(options).run(cached, cached.prepare(cond), np.array([cached.bos_id]))[0]
    reference = ARDecoder(options).run(_RecomputedArStep(model), (cond, np.zeros((1, 0), dtype=np.int64)),
                                       np.array([cached.bos_id]))[0]
    assert result.tokens == reference.tokens and len(result.tokens) > 0
    assert result.score == pytest.approx(reference.score, abs=1e-3)


def test_ar_step_past_the_sentence_is_refused() -> None:
    model = TtsModel(tiny_tts_config(ar_layers=2)).eval()
    step_model = TorchTtsBackend(model).ar()
    state = step_model.prepare(torch.randn(1, 3, 32))
    _, state = step_model.step(np.array([[step_model.bos_id, 1]]), state)
    with pytest.raises(ValueError, match="past the sentence's 3 frames"):
        step_model.step(np.array([[2, 3]]), state)


# ----------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_makes_audio_as_long_as_the_durations(synth: Synthesizer, decoder: str) -> None:
    result = synth.synthesize(TEXT, SynthesisOptions(decoder=decoder, seed=1, steps=3))
    assert len(result.sentences) == 2
    frames = sum(int(s.durations.sum()) for s in result.sentences)
    assert frames == sum(s.frames for s in result.sentences) > 0
    assert result.audio.shape == (frames * synth.codec.info.hop_length,)
    assert np.isfinite(result.audio).all() and result.sample_rate == 16000


@pytest.mark.parametrize("decoder", DECODERS)
def test_fixed_seed_gives_identical_audio_and_other_seeds_differ(synth: Synthesizer, decoder: str) -> None:
    options = SynthesisOptions(decoder=decoder, seed=5, steps=2, voice="espeak-us", temperature=0.8)
    first = synth.synthesize("Same words again.", options).audio
    assert np.array_equal(first, synth.synthesize("Same words again.", options).audio)
    assert not np.array_equal(first, synth.synthesize("Same words again.", replace(options, seed=6)).audio)


def test_semiar_is_greedy_by_default_and_the_others_sample(synth: Synthesizer) -> None:
    """semiar's default temperature is 0: its audio does not depend on the seed; nar and ar sample at 0.8."""
    assert [SynthesisOptions(decoder=d).resolved_temperature for d in ("nar", "semiar", "ar")] == [0.8, 0.0, 0.8]
    assert SynthesisOptions(decoder="semiar", temperature=0.5).resolved_temperature == 0.5
    semiar = SynthesisOptions(decoder="semiar", steps=2, seed=5)
    first = synth.synthesize("Same words again.", semiar).audio
    assert np.array_equal(first, synth.synthesize("Same words again.", replace(semiar, seed=6)).audio)
    nar = SynthesisOptions(decoder="nar", steps=2, seed=5)
    assert not np.array_equal(synth.synthesize("Same words again.", nar).audio,
                              synth.synthesize("Same words again.", replace(nar, seed=6)).audio)
    with pytest.raises(ConfigError, match="temperature"):
        synth.synthesize("Hello.", SynthesisOptions(decoder="semiar", temperature=3.0))


def test_semiar_stream_equals_one_shot_and_arrives_block_by_block(synth: Synthesizer) -> None:
    options = SynthesisOptions(decoder="semiar", seed=2, steps=2, block_frames=4)
    whole = synth.synthesize(TEXT, options)
    passes = []
    original = synth.backend.blocks

    def counting_blocks():
        model = original()
        inner = model.block_logits

        def block_logits(*args, **kwargs):
            passes.append(1)
            return inner(*args, **kwargs)

        model.block_logits = block_logits
        return model

    synth.backend.blocks = counting_blocks
    try:
        stream = synth.stream(TEXT, options)
        first = next(stream)
        passes_at_first_chunk = len(passes)
        chunks = [first] + list(stream)
    finally:
        synth.backend.blocks = original
    assert passes_at_first_chunk < len(passes)
    assert first.frames == 4 and first.audio.shape == (4 * 640,)
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {c.sentence for c in chunks} == {0, 1}
    np.testing.assert_allclose(np.concatenate([c.audio for c in chunks]), whole.audio, atol=1e-5)


def test_stream_equals_synthesize_for_nar(synth: Synthesizer) -> None:
    options = SynthesisOptions(decoder="nar", seed=4, steps=2)
    chunks = list(synth.stream(TEXT, options))
    assert len(chunks) == 2  # one per sentence
    np.testing.assert_allclose(np.concatenate([c.audio for c in chunks]), synth.synthesize(TEXT, options).audio,
                               atol=1e-5)


def test_rate_changes_the_length(synth: Synthesizer) -> None:
    normal = synth.synthesize(TEXT, SynthesisOptions(steps=1)).audio.shape[0]
    fast = synth.synthesize(TEXT, SynthesisOptions(steps=1, rate=2.0)).audio.shape[0]
    slow = synth.synthesize(TEXT, SynthesisOptions(steps=1, rate=0.5)).audio.shape[0]
    assert fast < normal < slow
    assert abs(fast / normal - 0.5) < 0.15 and abs(slow / normal - 2.0) < 0.3


def test_long_text_is_split_into_sentences() -> None:
    pieces = split_sentences("One. Two! " + "word, " * 80 + "end.", max_chars=100)
    assert pieces[:2] == ["One.", "Two!"] and all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces[2:]).replace("  ", " ") == ("word, " * 80 + "end.").strip()


def test_errors_are_actionable(synth: Synthesizer) -> None:
    with pytest.raises(TextError, match="empty"):
        synth.synthesize("   ")
    with pytest.raises(TextError, match=str(MAX_TEXT_CHARS)):
        synth.synthesize("word " * (MAX_TEXT_CHARS // 4))
    with pytest.raises(ConfigError, match="joe, espeak-us, espeak-gb-f"):
        synth.synthesize("Hello.", SynthesisOptions(voice="alice"))
    with pytest.raises(ConfigError, match="nar, semiar, ar"):
        synth.synthesize("Hello.", SynthesisOptions(decoder="diffusion"))
    with pytest.raises(ConfigError, match="rate"):
        synth.stream("Hello.", SynthesisOptions(rate=9.0))


def test_nar_is_guided_by_default_and_guidance_can_be_turned_off(synth: Synthesizer, monkeypatch) -> None:
    assert SynthesisOptions().resolved_guidance == 2.0  # nar, the default decoder
    assert SynthesisOptions(decoder="semiar").resolved_guidance == 0.0
    assert SynthesisOptions(decoder="ar").resolved_guidance == 2.0  # on its masked fine pass
    assert SynthesisOptions(guidance=0.0).resolved_guidance == 0.0
    unconditional = []
    masked = type(synth.backend.masked())
    logits = masked.logits

    def counting(self, tokens, codebooks, state, unconditional_=False):
        unconditional.append(unconditional_)
        return logits(self, tokens, codebooks, state, unconditional_)

    monkeypatch.setattr(masked, "logits", counting)
    guided = synth.synthesize("Hello there.", SynthesisOptions(seed=1))
    assert unconditional and set(unconditional) == {BOTH}  # every pass guided, both sides in one call
    unconditional.clear()
    plain = synth.synthesize("Hello there.", SynthesisOptions(seed=1, guidance=0.0))
    assert set(unconditional) == {False} and len(plain.audio) == len(guided.audio)
    with pytest.raises(ConfigError, match="guidance"):
        synth.synthesize("Hello.", SynthesisOptions(guidance=-1.0))


def test_semiar_guides_its_fine_pass_alone_by_default(synth: Synthesizer) -> None:
    assert SynthesisOptions(decoder="semiar").resolved_guidance == 0.0
    assert SynthesisOptions(decoder="semiar").resolved_fine_guidance == 2.0  # the default: the fine pass alone
    assert SynthesisOptions(decoder="semiar", guidance=0.0).resolved_fine_guidance == 0.0  # 0 turns all guidance off
    assert SynthesisOptions(decoder="nar").resolved_fine_guidance == 2.0  # unset: as the decoder's guidance
    assert SynthesisOptions(decoder="nar", guidance=1.0).resolved_fine_guidance == 1.0
    text = "Hello there, this is a longer sentence."
    options = SynthesisOptions(decoder="semiar", seed=2, block_frames=4, fine_guidance=2.0)
    guided = synth.synthesize(text, options)
    plain = synth.synthesize(text, SynthesisOptions(decoder="semiar", seed=2, block_frames=4, guidance=0.0))
    streamed = np.concatenate([chunk.audio for chunk in synth.stream(text, options)])
    assert len(guided.audio) == len(plain.audio) and not np.array_equal(guided.audio, plain.audio)
    assert np.allclose(streamed, guided.audio, atol=1e-4)  # the unconditional cache streams like the conditional
    with pytest.raises(ConfigError, match="fine_guidance"):
        synth.synthesize("Hello.", SynthesisOptions(fine_guidance=11.0))


# ----------------------------------------------------------------------------- artifacts


def test_save_load_round_trip(tmp_path: Path, bundle: TtsBundle) -> None:
    path = save_tts_model(bundle.model, tmp_path / "tts", bundle.phonemes, VOICES, bundle.codec,
                          training={"steps": 0}, metrics={"wer": None})
    loaded = load_tts_model(path)
    assert loaded.model.config == bundle.model.config and loaded.voices == VOICES
    assert loaded.phonemes == bundle.phonemes and loaded.codec == bundle.codec
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["codec"]["codebooks_used"] == 3 and card["training"] == {"steps": 0}
    for name, value in bundle.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value.half().float())
    with pytest.raises(ModelLoadError, match="train tts"):
        load_tts_model(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- training


def _train_options(out: Path, stop_at: int = 0, resume: bool = False):
    from tokenspeech.training.tts import TtsTrainOptions

    return TtsTrainOptions(corpus=FIXTURE, out=out, codebooks=3, steps=12, stop_at=stop_at, resume=resume,
                           max_seconds=6.0, model=tiny_tts_config(num_phonemes=1, num_voices=1, dropout=0.1),
                           aligner=AlignerConfig(num_phonemes=1, text_dim=16, mel_dim=16, attention_dim=16),
                           aligner_steps=4, aligner_batch_size=4, max_batch_frames=300, lr=3e-3, warmup=2,
                           threads=1, log_every=3, checkpoint_every=6, export_every=6, eval_utterances=2)


def test_training_smoke_loss_decreases_and_resume_is_exact(tmp_path: Path) -> None:
    from tokenspeech.training.tts import train_tts

    codec = tiny_codec()
    interrupted = tmp_path / "interrupted"
    train_tts(_train_options(interrupted, stop_at=6), codec)
    fresh = tmp_path / "fresh"
    shutil.copytree(interrupted, fresh)
    for name in ("last.pt", "train_log.jsonl", "tts.safetensors", "tts.json"):
        (fresh / name).unlink()
    reference = train_tts(_train_options(fresh), codec)  # reuses the cache and the finished aligner
    with pytest.raises(ConfigError, match="resume"):
        train_tts(_train_options(interrupted), codec)
    resumed = train_tts(_train_options(interrupted, resume=True), codec)
    assert resumed.steps == reference.steps == 12
    a, b = load_tts_model(reference.weights), load_tts_model(resumed.weights)
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    log = [json.loads(line) for line in (fresh / "train_log.jsonl").read_text().splitlines()]
    totals = [row["total"] for row in log if row.get("phase") == "tts" and "total" in row]
    assert totals[-1] < totals[0]
    durations = np.load(fresh / "cache" / "durations-train.npz")
    codes = np.load(fresh / "cache" / "codes-train.npz")
    assert durations["durations"].sum() == codes["codes"].shape[1] and durations["mel_durations"].min() >= 1


def test_bf16_autocast_training_keeps_float32_weights_and_close_losses(tmp_path: Path) -> None:
    from dataclasses import replace as with_changes

    from tokenspeech.training.tts import train_tts

    codec = tiny_codec()
    train_tts(_train_options(tmp_path / "fp32", stop_at=3), codec)
    bf16 = tmp_path / "bf16"
    shutil.copytree(tmp_path / "fp32" / "cache", bf16 / "cache")  # the same data and aligner
    shutil.copy(tmp_path / "fp32" / "aligner.pt", bf16 / "aligner.pt")
    train_tts(with_changes(_train_options(bf16, stop_at=3), bf16=True), codec)

    def first_row(run: Path) -> dict:
        rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        return next(row for row in rows if row.get("phase") == "tts" and "total" in row)

    expected, got = first_row(tmp_path / "fp32"), first_row(bf16)
    assert got["step"] == expected["step"]
    for name in ("total", "stage", "duration", "ar"):
        assert got[name] == pytest.approx(expected[name], rel=0.05), name
    state = torch.load(bf16 / "last.pt", weights_only=False)["model"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_stage_losses_score_every_codebook_on_the_same_masks(tmp_path: Path) -> None:
    """bench/tts_stages.py's numbers: one per codebook, repeatable, and the same inputs for any model."""
    from tokenspeech.training.tts import stage_losses, train_tts
    from tokenspeech.training.tts_data import TokenCache

    result = train_tts(_train_options(tmp_path / "run", stop_at=6), tiny_codec())
    cache = TokenCache.load(tmp_path / "run" / "cache" / "codes-train.npz",
                            tmp_path / "run" / "cache" / "durations-train.npz")
    trained = load_tts_model(result.weights).model
    first = stage_losses(trained, cache, 4, seed=3)
    assert [r["codebook"] for r in first] == [1, 2, 3] and all(r["positions"] > 0 for r in first)
    assert all(np.isfinite(r["ce"]) and 0.0 <= r["accuracy"] <= 1.0 for r in first)
    assert stage_losses(trained, cache, 4, seed=3) == first
    untrained = TtsModel(trained.config).eval()
    other = stage_losses(untrained, cache, 4, seed=3)
    assert [r["positions"] for r in other] == [r["positions"] for r in first]
    assert sum(r["ce"] for r in other) > sum(r["ce"] for r in first)  # training taught it something


def test_training_continues_from_exported_weights(tmp_path: Path) -> None:
    """--init-from: a new run starts from an export's weights and step (no last.pt needed)."""
    from dataclasses import replace as with_changes

    from tokenspeech.training.tts import train_tts

    codec = tiny_codec()
    first = train_tts(_train_options(tmp_path / "first", stop_at=6), codec)
    second = tmp_path / "second"
    shutil.copytree(tmp_path / "first" / "cache", second / "cache")
    shutil.copy(tmp_path / "first" / "aligner.pt", second / "aligner.pt")
    options = with_changes(_train_options(second), init_from=first.weights, steps=8)
    result = train_tts(options, codec)
    log = [json.loads(line) for line in (second / "train_log.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in log if row.get("phase") == "tts" and "total" in row]
    assert steps[0] > 6 and result.steps == 8  # continued at step 6, not from 0
    other = with_changes(options, out=tmp_path / "third", codebooks=2)
    with pytest.raises(ConfigError, match="configuration"):
        train_tts(other, codec)


def test_frame_layers_start_as_the_identity_so_an_export_can_grow_them(tmp_path: Path) -> None:
    """--frame-layers with --init-from: the grown model conditions exactly as its parent, then trains on;
    an export with frame layers cannot lose them."""
    from dataclasses import replace as with_changes

    from tokenspeech.training.tts import train_tts

    torch.manual_seed(0)
    parent = TtsModel(tiny_tts_config(frame_layers=0)).eval()
    grown = TtsModel(tiny_tts_config(frame_layers=2)).eval()
    missing, unexpected = grown.load_state_dict(parent.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("conditioner.frames.") for k in missing)
    phonemes, voice = torch.randint(4, 40, (2, 9)), torch.tensor([0, 2])
    durations = torch.randint(0, 4, (2, 9))
    h, _ = parent.encode_text(phonemes, voice)
    torch.testing.assert_close(grown.condition(h, durations, voice), parent.condition(h, durations, voice))

    codec = tiny_codec()
    plain = _train_options(tmp_path / "first", stop_at=6)
    first = train_tts(with_changes(plain, model=with_changes(plain.model, frame_layers=0)), codec)
    second = tmp_path / "second"
    shutil.copytree(tmp_path / "first" / "cache", second / "cache")
    shutil.copy(tmp_path / "first" / "aligner.pt", second / "aligner.pt")
    options = _train_options(second)
    options = with_changes(options, init_from=first.weights, steps=8,
                           model=with_changes(options.model, frame_layers=1))
    result = train_tts(options, codec)
    trained = load_tts_model(result.weights).model
    assert result.steps == 8 and trained.config.frame_layers == 1
    assert trained.conditioner.frames.blocks[0].ff[-1].weight.abs().sum() > 0  # it learnt, it is no longer zero
    shrunk = with_changes(options, out=tmp_path / "third", init_from=result.weights, steps=10,
                          model=with_changes(options.model, frame_layers=0))
    with pytest.raises(ConfigError, match="configuration"):
        train_tts(shrunk, codec)


def test_continuing_on_a_corpus_that_lacks_some_symbols_keeps_the_models_vocabulary(tmp_path: Path) -> None:
    """--init-from on new sentences that never use one of the model's phoneme symbols still trains;
    a corpus symbol the model does not know is refused before any encoding."""
    from tokenspeech.text.vocab import Vocabulary
    from tokenspeech.training.tts import train_tts

    codec = tiny_codec()
    first = load_tts_model(train_tts(_train_options(tmp_path / "first", stop_at=6), codec).weights)
    symbols = first.phonemes.to_json()

    def exported(name: str, vocabulary: list[str]) -> Path:
        config = replace(first.model.config, num_phonemes=len(vocabulary))
        return save_tts_model(TtsModel(config), tmp_path / name / "tts", Vocabulary.from_json(vocabulary),
                              first.voices, first.codec, training={"steps": 6})

    wider = exported("wider", [*symbols, "\u02b2"])  # a symbol the fixture corpus never uses
    result = train_tts(replace(_train_options(tmp_path / "continued"), init_from=wider, steps=8), codec)
    assert result.steps == 8
    assert load_tts_model(result.weights).phonemes.to_json() == [*symbols, "\u02b2"]
    narrower = exported("narrower", [s for s in symbols if s != "t"])
    out = tmp_path / "refused"
    with pytest.raises(ConfigError, match="phoneme symbols .*'t'"):
        train_tts(replace(_train_options(out), init_from=narrower), codec)
    assert not (out / "cache" / "codes-train.npz").exists()


# ----------------------------------------------------------------------------- CLI


def _cli(args: list[str]) -> int:
    from tokenspeech.tts import cli

    parser = argparse.ArgumentParser()
    cli.configure(parser)
    parsed = parser.parse_args(args)
    return parsed.run(parsed)


def test_cli_writes_a_wav_and_stream_writes_the_same_audio(tmp_path: Path, bundle: TtsBundle) -> None:
    from tokenspeech.tts import cli

    assert cli.DECODER_CHOICES == DECODERS
    codec = tiny_codec()
    codec_path = save_native_codec(codec.model, codec.config, tmp_path / "tscodec")[0]
    model_path = save_tts_model(bundle.model, tmp_path / "tts", bundle.phonemes, VOICES, codec.info)
    common = ["--model", str(model_path), "--codec", str(codec_path), "--decoder", "semiar", "--steps", "2"]
    assert _cli([TEXT, "-o", str(tmp_path / "a.wav")] + common) == 0
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    assert _cli(["--text-file", str(text_file), "-o", str(tmp_path / "b.wav"), "--stream"] + common) == 0
    audio = []
    for name in ("a.wav", "b.wav"):
        with wave.open(str(tmp_path / name)) as handle:
            assert handle.getframerate() == 16000 and handle.getnchannels() == 1 and handle.getsampwidth() == 2
            audio.append(np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(int))
    assert audio[0].size > 0 and audio[0].size == audio[1].size
    assert np.abs(audio[0] - audio[1]).max() <= 1
    with pytest.raises(ConfigError, match="voice"):
        _cli(["Hi.", "-o", str(tmp_path / "c.wav"), "--voice", "nobody"] + common)


def test_decoding_and_cli_help_do_not_import_torch() -> None:
    code = ("import sys, tokenspeech.decoding.masked, tokenspeech.decoding.semiar, tokenspeech.tts.cli, "
            "tokenspeech.training.tts_cli; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_train_cli_takes_the_frame_layers_of_the_model_it_continues(tmp_path: Path, bundle: TtsBundle,
                                                                     monkeypatch) -> None:
    """Continuing a model with frame layers needs no --frame-layers; the flag still overrides (e.g. to add them)."""
    import tokenspeech.training.tts as recipe
    from tokenspeech.training.tts_cli import configure_tts

    exported = save_tts_model(bundle.model, tmp_path / "tts", bundle.phonemes, VOICES, bundle.codec,
                              training={"steps": 3})
    seen = []
    monkeypatch.setattr(recipe, "train_tts", lambda options: seen.append(options) or recipe.TtsTrainResult(
        0, exported, exported.with_suffix(".json"), {}))
    parser = argparse.ArgumentParser()
    configure_tts(parser.add_subparsers())
    for extra, expected in (([], bundle.model.config.frame_layers), (["--frame-layers", "3"], 3)):
        args = parser.parse_args(["tts", "--corpus", str(FIXTURE), "--out", str(tmp_path / "run"),
                                  "--init-from", str(exported), *extra])
        assert args.run(args) == 0 and seen[-1].model.frame_layers == expected
    args = parser.parse_args(["tts", "--corpus", str(FIXTURE), "--out", str(tmp_path / "run")])
    assert args.run(args) == 0 and seen[-1].model.frame_layers == 0


def test_stage_weights_choose_which_codebook_is_learned_given_the_earlier_ones() -> None:
    """--stage-weights 0,1,0: every item shows codebook 1 whole, masks part of codebook 2 and hides codebook 3."""
    from tokenspeech.training.tts import MaskingOptions, TtsTrainOptions, masked_inputs

    config = tiny_tts_config(num_phonemes=4, num_voices=1)
    codes = torch.randint(0, config.codebook_size, (16, 3, 20))
    lengths = torch.full((16,), 20)
    options = MaskingOptions(block_prob=0.0, stage_weights=(0.0, 1.0, 0.0))
    masked = masked_inputs(codes, lengths, options, config, np.random.default_rng(0))
    assert torch.equal(masked.codes[:, 0], codes[:, 0])
    assert bool(masked.stage_target[:, 1].any(dim=1).all()) and not bool(masked.stage_target[:, [0, 2]].any())
    assert bool((masked.codes[:, 2] == config.mask_id).all()) and bool(masked.later_target[:, 2].all())
    default = MaskingOptions().stage_probabilities(6)
    assert default[0] == pytest.approx(0.5) and default[1:] == pytest.approx([0.1] * 5)
    with pytest.raises(ConfigError, match="one per codebook"):
        TtsTrainOptions(corpus=FIXTURE, out=Path("unused"), codebooks=3,
                        masking=MaskingOptions(stage_weights=(1.0, 1.0)))
    with pytest.raises(ConfigError, match="positive sum"):
        MaskingOptions(stage_weights=(0.0, 0.0, 0.0))


def test_train_cli_passes_stage_weights_and_rejects_words(tmp_path: Path, monkeypatch) -> None:
    import tokenspeech.training.tts as recipe
    from tokenspeech.training.tts_cli import configure_tts

    seen = []
    monkeypatch.setattr(recipe, "train_tts", lambda options: seen.append(options) or recipe.TtsTrainResult(
        0, tmp_path / "tts.safetensors", tmp_path / "tts.json", {}))
    parser = argparse.ArgumentParser()
    configure_tts(parser.add_subparsers())
    base = ["tts", "--corpus", str(FIXTURE), "--out", str(tmp_path / "run"), "--codebooks", "3"]
    args = parser.parse_args([*base, "--stage-weights", "1,2,0.5"])
    assert args.run(args) == 0 and seen[-1].masking.stage_weights == (1.0, 2.0, 0.5) and not seen[-1].bf16
    args = parser.parse_args([*base, "--bf16"])
    assert args.run(args) == 0 and seen[-1].bf16
    args = parser.parse_args([*base, "--stage-weights", "1,two,3"])
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        args.run(args)
