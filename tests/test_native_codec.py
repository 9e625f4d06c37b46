"""tscodec on a tiny random model: shapes, ladder, streaming == offline, causality, RVQ,
save/load, PyTorch == ONNX Runtime, errors, and a short training run with exact resume."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenspeech.artifacts import artifact_paths
from tokenspeech.codecs.native import (
    TRAINING_ONLY_KEYS,
    NativeCodec,
    codec_info,
    default_weights_path,
    load_native_codec,
    save_native_codec,
)
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.models.codec import CodecConfig, CodecModel, ResidualVectorQuantizer

HOP = 640
TINY = CodecConfig(encoder_fine_dim=16, encoder_fine_blocks=1, encoder_dim=32, encoder_blocks=2, latent_dim=8,
                   num_codebooks=4, codebook_size=32, decoder_dim=32, decoder_blocks=2, decoder_fine_dim=16,
                   decoder_fine_blocks=1, kmeans_iterations=3)


def speechlike(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    """``[B, 1, frames * 640]`` harmonic tones with a gliding pitch, an envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * HOP) / 16000
    rows = []
    for _ in range(batch):
        f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        tone = sum(np.sin(h * phase) / h for h in range(1, 12))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t) ** 2
        rows.append(0.1 * tone * envelope + 0.005 * rng.standard_normal(t.shape))
    return torch.from_numpy(np.stack(rows)[:, None].astype(np.float32))


@pytest.fixture(scope="module")
def model() -> CodecModel:
    """Tiny model whose quantizer is fitted (k-means + a few EMA steps) on its own latents."""
    torch.manual_seed(0)
    net = CodecModel(TINY).train()
    with torch.no_grad():
        for seed in range(4):
            net(speechlike(4, 20, seed), torch.full((4,), TINY.num_codebooks))
    return net.eval()


@pytest.fixture(scope="module")
def codec(model: CodecModel) -> NativeCodec:
    return NativeCodec(model)


def run_chunks(step, init, inputs: torch.Tensor, sizes: list[int], scale: int) -> torch.Tensor:
    state, outputs, start = init(inputs.shape[0]), [], 0
    for size in sizes:
        out, state = step(inputs[..., start * scale:(start + size) * scale], state)
        outputs.append(out)
        start += size
    return torch.cat(outputs, dim=-1)


def test_shapes_and_padding(codec: NativeCodec) -> None:
    wav = speechlike(2, 7)
    codes = codec.encode(wav)
    assert codes.shape == (2, 4, 7) and codes.dtype == torch.int64
    assert codec.decode(codes).shape == (2, 1, 7 * HOP)
    assert codec.encode(wav[..., :-100], codebooks=2).shape == (2, 2, 7)  # padded to whole frames
    assert codec.decode(codes[:, :1]).shape == (2, 1, 7 * HOP)


def test_bitrate_ladder() -> None:
    info = codec_info(CodecConfig())
    assert (info.name, info.sample_rate, info.frame_rate, info.hop_length) == ("tscodec", 16000, 25.0, 640)
    assert [info.bitrate_kbps(k) for k in (6, 12, 24)] == [1.5, 3.0, 6.0]
    assert [info.codebooks_for_kbps(kbps) for kbps in (1.5, 3, 6, 100)] == [6, 12, 24, 24]
    assert CodecConfig().latency_samples / 16 == 70.0  # ms


@pytest.mark.parametrize("sizes", [[1] * 12, [3, 3, 3, 3], [1, 4, 2, 5]])
def test_streaming_equals_offline(codec: NativeCodec, sizes: list[int]) -> None:
    wav = speechlike(2, 12, seed=5)
    codes = codec.encode(wav)
    streamed = run_chunks(codec.encode_step, codec.init_encode_state, wav, sizes, HOP)
    assert torch.equal(streamed, codes)
    audio = codec.decode(codes)
    decoded = run_chunks(codec.decode_step, codec.init_decode_state, codes, sizes, 1)
    assert torch.allclose(decoded, audio, atol=1e-5, rtol=0)


def test_causality(codec: NativeCodec) -> None:
    wav = speechlike(1, 10, seed=3)
    longer = torch.cat([wav, speechlike(1, 6, seed=9)], dim=-1)
    assert torch.equal(codec.encode(longer)[..., :10], codec.encode(wav))
    codes = codec.encode(longer)
    assert torch.allclose(codec.decode(codes)[..., :10 * HOP], codec.decode(codes[..., :10]), atol=1e-5)


def test_streaming_chunk_must_be_whole_frames(codec: NativeCodec) -> None:
    with pytest.raises(ConfigError, match="multiple of 640"):
        codec.encode_step(torch.zeros(1, 1, 1000), codec.init_encode_state(1))
    with pytest.raises(ConfigError, match="codebooks must be an integer in 1..4"):
        codec.encode(torch.zeros(1, 1, HOP), codebooks=5)
    with pytest.raises(ConfigError, match="codes must be in"):
        codec.decode(torch.full((1, 2, 3), 32))


def test_rvq_more_codebooks_reconstruct_better() -> None:
    torch.manual_seed(1)
    rvq = ResidualVectorQuantizer(num_codebooks=6, codebook_size=64, dim=8, kmeans_iterations=5).train()
    latents = [torch.randn(16, 40, 8) for _ in range(6)]
    for latent in latents:
        out = rvq(latent, torch.full((16,), 6))
    assert out.codes.min() >= 0 and out.codes.max() < 64 and out.codes.shape == (16, 6, 40)
    rvq.eval()
    test = torch.randn(8, 40, 8)
    errors = [(rvq.decode(rvq.encode(test, k)) - test).pow(2).mean().item() for k in range(1, 7)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.5 * errors[0]


def test_rvq_dropout_and_dead_codes() -> None:
    torch.manual_seed(2)
    rvq = ResidualVectorQuantizer(num_codebooks=3, codebook_size=16, dim=4).train()
    latent = torch.randn(2, 50, 4)
    out = rvq(latent, torch.tensor([1, 3]))
    first_only = rvq.codebooks[0][out.codes[0, 0]]
    assert torch.allclose(out.quantized[0], first_only, atol=1e-6)  # item 0 used one codebook
    with torch.no_grad():
        rvq.codebooks[1, :4] = 100.0  # four codewords of stage 1, far from every residual ...
        rvq.idle[1, :4] = rvq.dead_code_patience * 16 - 1  # ... and unused for long: replaced now
    assert rvq(latent, torch.tensor([3, 3])).replaced >= 4
    assert rvq.codebooks[1, :4].abs().max() < 10


def test_save_load_round_trip(model: CodecModel, tmp_path: Path) -> None:
    weights, card = save_native_codec(model, TINY, tmp_path / "tiny.safetensors", {"training": {"data": "test"}})
    assert weights.name == "tiny.safetensors" and card.name == "tiny.json"
    loaded = load_native_codec(tmp_path / "tiny.safetensors")
    meta = json.loads(card.read_text())
    assert meta["codec"]["name"] == "tscodec" and meta["architecture"]["latent_dim"] == 8
    assert meta["training"] == {"data": "test"} and meta["weights_dtype"] == "float16"
    original = model.state_dict()
    for key, value in loaded.model.state_dict().items():
        if key in TRAINING_ONLY_KEYS:
            continue
        assert torch.equal(value, original[key].half().float()), key
    wav = speechlike(1, 6)
    codes = loaded.encode(wav)
    assert loaded.decode(codes).shape == (1, 1, 6 * HOP)


def test_shipped_codec_loads_and_resaves_with_the_same_card_keys(tmp_path: Path) -> None:
    """The shipped ``assets/tscodec.*`` loads every stored weight; saving it again keeps the card's keys."""
    from safetensors.torch import load_file

    shipped = load_native_codec()
    weights, card = artifact_paths(default_weights_path())
    stored = load_file(str(weights))
    state = shipped.model.state_dict()
    assert set(stored) == set(state) - set(TRAINING_ONLY_KEYS)
    assert all(torch.equal(state[k], v.float()) for k, v in stored.items())
    assert shipped.card == json.loads(card.read_text())
    again_weights, again_card = save_native_codec(shipped.model, shipped.config, tmp_path / "again",
                                                  {k: shipped.card[k] for k in ("training", "metrics")})
    assert json.loads(again_card.read_text()).keys() == shipped.card.keys()
    again = load_file(str(again_weights))
    assert again.keys() == stored.keys() and all(torch.equal(again[k], v) for k, v in stored.items())
    wav = speechlike(1, 3)
    assert torch.equal(load_native_codec(again_weights).encode(wav), shipped.encode(wav))


def test_missing_weights_raise_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="tokenspeech train codec"):
        load_native_codec(tmp_path / "nothing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "bad.json").write_text(json.dumps({"format_version": 1, "architecture": TINY.to_json()}))
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_native_codec(tmp_path / "bad")


def test_onnx_steps_match_torch(model: CodecModel, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from tokenspeech.export.codec import GRAPH_NAMES, export_codec_onnx
    from tokenspeech.models.codec import flatten_state

    export = export_codec_onnx(model, tmp_path)
    manifest = json.loads(export.manifest.read_text())
    assert set(manifest["graphs"]) == {"encoder_step", "decoder_step", "encoder", "decoder"}
    sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for name, path in export.graphs.items()}
    for batch, frames in ((1, 2), (3, 7)):
        wav = speechlike(batch, 2 * frames, seed=frames)
        enc_state, dec_state = model.init_encode_state(batch), model.init_decode_state(batch)
        with torch.no_grad():
            for chunk in (wav[..., :frames * HOP], wav[..., frames * HOP:]):  # two steps: states carry over
                feeds = {GRAPH_NAMES.wav: chunk.numpy(),
                         **{n: t.numpy() for n, (_, t) in zip(GRAPH_NAMES.state_inputs(enc_state),
                                                              flatten_state(enc_state))}}
                codes, *ort_state = sessions["encoder_step"].run(None, feeds)
                torch_codes, enc_state = model.encode_step(chunk, enc_state)
                assert np.array_equal(codes, torch_codes.numpy())
                for ort_t, (_, t) in zip(ort_state, flatten_state(enc_state)):
                    np.testing.assert_allclose(ort_t, t.numpy(), atol=1e-4)
                for k in (2, 4):
                    feeds = {GRAPH_NAMES.codes: codes[:, :k],
                             **{n: t.numpy() for n, (_, t) in zip(GRAPH_NAMES.state_inputs(dec_state),
                                                                  flatten_state(dec_state))}}
                    audio, *ort_state = sessions["decoder_step"].run(None, feeds)
                    torch_audio, next_state = model.decode_step(torch.from_numpy(codes[:, :k]), dec_state)
                    np.testing.assert_allclose(audio, torch_audio.numpy(), atol=1e-4)
                dec_state = next_state
        offline = sessions["decoder"].run(None, {GRAPH_NAMES.codes: codes})[0]
        np.testing.assert_allclose(offline, model.decode(torch.from_numpy(codes)).detach().numpy(), atol=1e-4)
        assert np.array_equal(sessions["encoder"].run(None, {GRAPH_NAMES.wav: wav.numpy()})[0],
                              model.encode(wav).numpy())


# ----------------------------------------------------------------------------- training


def write_corpus(root: Path, clips: int = 6) -> Path:
    import soundfile as sf

    rows = []
    for i in range(clips):
        path = root / "audio" / f"clip{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = speechlike(1, 40, seed=100 + i)[0, 0].numpy()
        sf.write(str(path), wav, 16000, format="FLAC", subtype="PCM_16")
        rows.append({"id": f"c{i}", "split": "train", "path": f"audio/clip{i}.flac", "duration": len(wav) / 16000,
                     "sample_rate": 16000})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def tiny_training(corpus: Path, out: Path, steps: int, every: int, warmup_steps: int = 1):
    """Options of a few-step tiny-codec training on one thread, checkpointed and exported ``every`` steps."""
    from tokenspeech.training.codec import CodecTrainOptions

    return CodecTrainOptions(corpus=corpus, out=out, steps=steps, batch_size=4, crop_seconds=0.64, lr=3e-3,
                             warmup_steps=warmup_steps, threads=1, seed=3, log_interval=1, checkpoint_interval=every,
                             export_interval=every, ladder=(2, 4), validation_items=2, config=TINY)


def test_training_smoke_and_exact_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspeech.training.codec import CodecTrainer, train_codec

    corpus = write_corpus(tmp_path / "corpus")
    threads = torch.get_num_threads()
    options = tiny_training(corpus, tmp_path / "a", steps=20, every=10, warmup_steps=2)
    interrupted = replace(options, out=tmp_path / "b")
    train_step = CodecTrainer.train_step

    def killed_at_15(self: CodecTrainer) -> dict:
        if self.step == 15:
            raise KeyboardInterrupt
        return train_step(self)

    try:
        straight = train_codec(options)
        monkeypatch.setattr(CodecTrainer, "train_step", killed_at_15)
        with pytest.raises(KeyboardInterrupt):
            train_codec(interrupted)
        monkeypatch.undo()
        with pytest.raises(ConfigError, match="--resume"):
            train_codec(interrupted)
        resumed = train_codec(replace(interrupted, resume=True))  # from the checkpoint at step 10
    finally:
        torch.set_num_threads(threads)
    losses = [r["loss"] for r in read_log(tmp_path / "a") if "loss" in r]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert resumed.steps == 20 and straight.weights.is_file()
    assert [r["step"] for r in read_log(tmp_path / "b") if "loss" in r] == list(range(1, 21))
    assert resumed.last_log["loss"] == pytest.approx(straight.last_log["loss"], rel=1e-6)
    assert load_native_codec(resumed.weights).info.num_codebooks == 4


def test_decoder_fine_tuning_keeps_tokens(tmp_path: Path) -> None:
    """--init-from + --freeze-tokenizer: the decoder learns, the tokens of any audio stay the same."""
    from tokenspeech.training.codec import train_codec

    corpus = write_corpus(tmp_path / "corpus")
    threads = torch.get_num_threads()
    base = tiny_training(corpus, tmp_path / "base", steps=6, every=6)
    with pytest.raises(ConfigError, match="init_from"):
        replace(base, out=tmp_path / "x", freeze_tokenizer=True)
    try:
        first = train_codec(base)
        tuned = train_codec(replace(base, out=tmp_path / "tuned", init_from=first.weights, freeze_tokenizer=True))
    finally:
        torch.set_num_threads(threads)
    before, after = load_native_codec(first.weights), load_native_codec(tuned.weights)
    audio = speechlike(2, 12, seed=9)
    assert torch.equal(before.encode(audio), after.encode(audio))
    changed = [k for k, v in before.model.decoder.state_dict().items()
               if not torch.equal(v, after.model.decoder.state_dict()[k])]
    assert changed, "the decoder did not train"
    for part in ("encoder", "quantizer"):
        for key, value in getattr(before.model, part).state_dict().items():
            assert torch.equal(value, getattr(after.model, part).state_dict()[key]), f"{part}.{key} changed"


def test_grown_decoder_starts_as_its_source(tmp_path: Path) -> None:
    """A deeper decoder initialised from a codec decodes exactly like it until it trains; shrinking is refused."""
    from tokenspeech.training.codec import CodecTrainer, train_codec

    corpus = write_corpus(tmp_path / "corpus")
    threads = torch.get_num_threads()
    base = tiny_training(corpus, tmp_path / "base", steps=4, every=4)
    deeper = replace(TINY, decoder_blocks=TINY.decoder_blocks + 2, decoder_fine_blocks=TINY.decoder_fine_blocks + 1)
    try:
        first = train_codec(base)
        grown = CodecTrainer(replace(base, out=tmp_path / "grown", init_from=first.weights, freeze_tokenizer=True,
                                     config=deeper))
        grown.load_initial_weights(first.weights)
        shallower = replace(TINY, decoder_blocks=TINY.decoder_blocks - 1)
        with pytest.raises(ConfigError, match="only the decoder's block counts may grow"):
            CodecTrainer(replace(base, out=tmp_path / "x", config=shallower)).load_initial_weights(first.weights)
        wider = replace(TINY, decoder_dim=TINY.decoder_dim * 2)
        with pytest.raises(ConfigError, match="different architecture"):
            CodecTrainer(replace(base, out=tmp_path / "y", config=wider)).load_initial_weights(first.weights)
        tuned = train_codec(replace(base, out=tmp_path / "tuned", init_from=first.weights, freeze_tokenizer=True,
                                    config=deeper, steps=3))
    finally:
        torch.set_num_threads(threads)
    source = load_native_codec(first.weights)
    assert len(grown.model.decoder.coarse.blocks) == TINY.decoder_blocks + 2
    codes = source.encode(speechlike(1, 12, seed=4))
    grown.model.eval()
    with torch.no_grad():
        assert torch.allclose(grown.model.decode(codes), source.model.decode(codes), atol=1e-6)
    trained = load_native_codec(tuned.weights)
    assert trained.model.config == deeper
    assert float(trained.model.decoder.coarse.blocks[-1].gamma.detach().abs().max()) > 0, "the new blocks did not train"
