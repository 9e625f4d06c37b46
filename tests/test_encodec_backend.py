"""EnCodec backend on a random-weight model: shapes, fidelity to the encodec package, streaming, ONNX, loading.

Tolerances (measured on EncodecTokenizer.random(0), see the encodec module docstring):
- streaming with a first chunk of >= 7 frames: encoder latents within 3e-7 of offline, decoder output
  within 1e-7; codes are the nearest codebook entries to those latents, so they may differ only where
  two entries are tied to within that perturbation (checked explicitly by ``assert_codes_equal_up_to_ties``);
- 1-frame chunks from the very start: the decoder differs by <= 1.2e-4 (peak 0.1) in the first 8 frames
  and by float rounding afterwards; encoder latents converge to within 2e-6 after 20 frames;
- ONNX Runtime vs PyTorch: decoder within 2e-7, encoder codes equal up to ties.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenspeech.codecs.encodec import CHECKPOINT_NAME, ENCODEC_BANDWIDTHS, WEIGHTS_ENV, EncodecTokenizer, load_encodec
from tokenspeech.errors import ConfigError, ModelLoadError

HOP = 320


pytestmark = pytest.mark.usefixtures("one_thread")


def speech(batch: int, seconds: float, seed: int = 1) -> torch.Tensor:
    """``[B, 1, T]`` voiced-ish test audio: harmonics with a moving pitch, syllable envelope and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    out = []
    for _ in range(batch):
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * t))
        phase = 2 * np.pi * np.cumsum(f0) / 24000
        voiced = sum(np.sin(h * phase) / h for h in range(1, 20))
        wave = (voiced * np.sin(np.pi * t * 4) ** 2 + 0.05 * rng.standard_normal(len(t))) * 0.1
        out.append(wave.astype(np.float32))
    return torch.from_numpy(np.stack(out)).unsqueeze(1)


def latents(tok: EncodecTokenizer, wav: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Encoder outputs ``[B, D, F]`` computed in chunks of ``sizes`` frames."""
    state = tok.encoder.init_state(wav.shape[0])
    started = torch.zeros(wav.shape[0], dtype=torch.bool)
    pieces, pos = [], 0
    with torch.no_grad():
        for n in sizes:
            latent, state = tok.encoder(wav[..., pos:pos + n * HOP], state, started)
            started = torch.ones_like(started)
            pieces.append(latent)
            pos += n * HOP
    return torch.cat(pieces, dim=-1)


def schedule(total: int, first: int, pattern: tuple[int, ...] = (1, 2, 3, 5)) -> list[int]:
    sizes, i = [first], 0
    while sum(sizes) < total:
        sizes.append(min(pattern[i % len(pattern)], total - sum(sizes)))
        i += 1
    return sizes


def assert_codes_equal_up_to_ties(tok: EncodecTokenizer, codes: torch.Tensor, reference: torch.Tensor,
                                  latent: torch.Tensor, delta: float = 1e-6) -> None:
    """Wherever ``codes`` first differs from ``reference`` in a frame, both entries must be tied.

    Tied: their squared distances to the reference residual differ by no more than a latent
    perturbation of ``delta`` can change them, plus float32 rounding of the distance expansion.
    """
    books = tok.quantizer.codebooks
    for b, f in (codes != reference).any(dim=1).nonzero().tolist():
        k = int((codes[b, :, f] != reference[b, :, f]).int().argmax())
        residual = latent[b, :, f] - sum((books[j][reference[b, j, f]] for j in range(k)), torch.zeros(1))
        ours, theirs = books[k][codes[b, k, f]], books[k][reference[b, k, f]]
        gap = abs(float((residual - ours).pow(2).sum() - (residual - theirs).pow(2).sum()))
        allowed = 2 * float((ours - theirs).norm()) * delta + 1e-6 * float(
            residual.pow(2).sum() + ours.pow(2).sum() + theirs.pow(2).sum())
        assert gap <= allowed, f"frame {f} codebook {k}: not a tie (gap {gap:.3g} > {allowed:.3g})"
    first_two = (codes[:, :2] == reference[:, :2]).all(dim=1).float().mean()
    assert first_two >= 0.95


@pytest.mark.parametrize("kbps, k", list(zip(ENCODEC_BANDWIDTHS, (2, 4, 8, 16, 32))))
def test_shapes_per_bandwidth(tok: EncodecTokenizer, kbps: float, k: int) -> None:
    assert tok.info.codebooks_for_kbps(kbps) == k and tok.info.bitrate_kbps(k) == kbps
    wav = speech(2, 0.5)[..., :11000]  # not a whole number of frames: zero-padded
    codes = tok.encode(wav, codebooks=k)
    assert codes.shape == (2, k, math.ceil(11000 / HOP)) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 1024
    assert all(len(codes[:, i].unique()) > 1 for i in range(k)), "every codebook must be used"
    out = tok.decode(codes)
    assert out.shape == (2, 1, codes.shape[-1] * HOP) and torch.isfinite(out).all() and out.abs().max() > 0


def test_same_result_as_the_encodec_package(tok: EncodecTokenizer) -> None:
    wav = speech(1, 1.0)
    tok.model.set_target_bandwidth(6.0)
    with torch.no_grad():
        ref_codes = tok.model.encode(wav)[0][0]
        ref_wav = tok.model.decode([(ref_codes, None)])
    codes = tok.encode(wav, codebooks=8)
    assert_codes_equal_up_to_ties(tok, codes, ref_codes, latents(tok, wav, [75]))
    assert (tok.decode(ref_codes) - ref_wav).abs().max() < 1e-6


def test_streaming_equals_offline_when_first_chunk_has_7_frames(tok: EncodecTokenizer) -> None:
    assert tok.min_exact_first_frames == 7
    wav = speech(2, 1.2)
    frames = wav.shape[-1] // HOP
    sizes = schedule(frames, first=7)
    offline = latents(tok, wav, [frames])
    streamed = latents(tok, wav, sizes)
    assert (streamed - offline).abs().max() < 1e-6
    codes = tok.encode(wav, 8)
    state, pieces, pos = tok.init_encode_state(2), [], 0
    for n in sizes:
        piece, state = tok.encode_step(wav[..., pos:pos + n * HOP], state, 8)
        pieces.append(piece)
        pos += n * HOP
    assert_codes_equal_up_to_ties(tok, torch.cat(pieces, -1), codes, offline)
    state, out, pos = tok.init_decode_state(2), [], 0
    for n in sizes:
        piece, state = tok.decode_step(codes[..., pos:pos + n], state)
        out.append(piece)
        pos += n
    assert (torch.cat(out, -1) - tok.decode(codes)).abs().max() < 1e-6


def test_one_frame_chunks_from_the_start_differ_only_at_first(tok: EncodecTokenizer) -> None:
    wav = speech(1, 1.0)
    frames = wav.shape[-1] // HOP
    gap = (latents(tok, wav, [1] * frames) - latents(tok, wav, [frames])).abs().amax(dim=(0, 1))
    assert gap[20:].max() < 1e-5
    codes = tok.encode(wav, 4)
    state, out = tok.init_decode_state(1), []
    for f in range(frames):
        piece, state = tok.decode_step(codes[..., f:f + 1], state)
        out.append(piece)
    diff = (torch.cat(out, -1) - tok.decode(codes)).abs().view(frames, HOP).amax(dim=1)
    assert diff[:8].max() < 2e-3 and diff[8:].max() < 1e-5


def test_started_flag_restarts_one_stream(tok: EncodecTokenizer) -> None:
    wav = speech(2, 0.6)
    codes = tok.encode(wav, 2)
    _, state = tok.decode_step(codes, tok.init_decode_state(2))
    restarted = type(state)(torch.tensor([True, False]), state.buffers)
    again, _ = tok.decode_step(codes, restarted)
    fresh = tok.decode(codes)
    assert (again[1] - fresh[1]).abs().max() < 1e-6
    assert (again[0] - fresh[0]).abs().max() > 1e-4  # stream 0 continued from its history


def test_bad_inputs_raise_config_error(tok: EncodecTokenizer) -> None:
    with pytest.raises(ConfigError, match="multiple of 320"):
        tok.encode_step(torch.zeros(1, 1, 500), tok.init_encode_state(1))
    with pytest.raises(ConfigError, match=r"\[B, 1, T\]"):
        tok.encode(torch.zeros(1, 2, 640))
    with pytest.raises(ConfigError, match="1..32 codebooks"):
        tok.encode(torch.zeros(1, 1, 640), codebooks=33)
    with pytest.raises(ConfigError, match=r"\[0, 1024\)"):
        tok.decode(torch.full((1, 2, 3), 1024))
    with pytest.raises(ConfigError, match="holds 1 streams"):
        tok.decode_step(torch.zeros(2, 2, 3, dtype=torch.long), tok.init_decode_state(1))


def test_onnx_step_graphs_match_pytorch(tok: EncodecTokenizer, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from tokenspeech.export.encodec import EncodecOnnxManifest, export_encodec

    manifest = export_encodec(tok, tmp_path)
    assert EncodecOnnxManifest.load(tmp_path) == manifest
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    chunk, batch = manifest.chunk_samples, 2
    wav = speech(batch, 2 * chunk / 24000)

    def run(graph, data: list[np.ndarray]) -> np.ndarray:
        session = ort.InferenceSession(str(tmp_path / graph.file), options, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(graph.inputs)
        state = [np.zeros([batch if d == "B" else d for d in shape], np.float32) for shape in graph.state_shapes]
        outputs = []
        for i, piece in enumerate(data):
            feed = {graph.inputs[0]: piece, graph.inputs[1]: np.full(batch, i > 0)}
            result = session.run(None, feed | dict(zip(graph.state_inputs, state)))
            outputs.append(result[0])
            state = result[1:]
        return np.concatenate(outputs, axis=-1)

    codes = run(manifest.encoder, [wav[..., i * chunk:(i + 1) * chunk].numpy() for i in range(2)])
    reference = tok.encode(wav)
    assert codes.shape == tuple(reference.shape)
    assert_codes_equal_up_to_ties(tok, torch.from_numpy(codes), reference, latents(tok, wav, [wav.shape[-1] // HOP]))
    frames = manifest.chunk_frames
    for k in (32, 2):
        audio = run(manifest.decoder, [reference[:, :k, i * frames:(i + 1) * frames].numpy() for i in range(2)])
        assert np.abs(audio - tok.decode(reference[:, :k]).numpy()).max() < 1e-5


def test_export_rejects_chunks_too_short_for_exact_streaming(tok: EncodecTokenizer, tmp_path: Path) -> None:
    from tokenspeech.export.encodec import export_encodec

    with pytest.raises(ConfigError, match=">= 7"):
        export_encodec(tok, tmp_path, chunk_frames=6)


@pytest.fixture()
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub and no env var; returns the hub checkpoint path load_encodec would look at."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints" / CHECKPOINT_NAME


def test_missing_weights_error_names_the_file_and_env_var(no_weights: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_encodec()
    message = str(caught.value)
    assert str(no_weights) in message and WEIGHTS_ENV in message and "encodec_model_24khz()" in message


def test_missing_explicit_or_env_weights_are_named(no_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="nope.th not found"):
        load_encodec(tmp_path / "nope.th")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "env.th"))
    with pytest.raises(ModelLoadError, match=rf"env.th \(from \${WEIGHTS_ENV}\) not found"):
        load_encodec()


def test_weights_from_env_hub_cache_and_explicit_path(no_weights: Path, tok_weights: Path, tok: EncodecTokenizer,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wav = speech(1, 0.3)
    expected = tok.encode(wav)
    monkeypatch.setenv(WEIGHTS_ENV, str(tok_weights))
    assert torch.equal(load_encodec().encode(wav), expected)
    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(WEIGHTS_ENV, str(garbage))
    with pytest.raises(ModelLoadError, match="not a readable PyTorch state dict"):
        load_encodec()
    assert torch.equal(load_encodec(tok_weights).encode(wav), expected)  # explicit path wins over the env
    monkeypatch.delenv(WEIGHTS_ENV)
    no_weights.parent.mkdir(parents=True)
    no_weights.symlink_to(tok_weights)
    assert torch.equal(load_encodec().encode(wav), expected)


def test_foreign_state_dict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="not an EnCodec 24 kHz state dict"):
        load_encodec(path)
