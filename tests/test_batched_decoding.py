"""Batched model passes across sessions: each session gets what it would alone (same tokens, same audio).

Tiny random models; the decoding loops run as programs
(:mod:`tokenspeech.decoding.calls`) driven side by side, their passes merged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from tokenspeech.decoding import calls
from tokenspeech.decoding.calls import Call
from tokenspeech.models.transformer import (
    BufferPass,
    Transformer,
    TransformerConfig,
    empty_cache,
    kv_buffer,
    rotary_row_tables,
    rotary_tables,
    stack_caches,
    unstack_cache,
)
from tokenspeech.tts.pipeline import SynthesisOptions, Synthesizer

from tiny_exports import export_tiny_models
from tiny_models import tiny_codec, tiny_tts_bundle

TEXTS = ("Hello there, this is a test. How are you today?", "Short one.",
         "A somewhat longer sentence goes here, with a comma.", "Yes.")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer(tiny_tts_bundle(), tiny_codec())


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Sizes of the batched passes run (by kind of pass)."""
    sizes: Counter = Counter()
    original = calls.run_batch

    def recording(group):
        sizes[(type(group[0].owner).__name__, len(group))] += 1
        return original(group)

    monkeypatch.setattr(calls, "run_batch", recording)
    return sizes


def test_rotary_row_tables_equal_the_tables_of_each_row_exactly() -> None:
    offsets = torch.tensor([0, 5, 17])
    cos, sin = rotary_row_tables(4, 8, offsets)
    for row, offset in enumerate(offsets.tolist()):
        alone = rotary_tables(4, 8, offset)
        assert torch.equal(cos[row, 0], alone[0]) and torch.equal(sin[row, 0], alone[1])


@pytest.mark.parametrize("causal", [False, True])
def test_step_rows_equals_step_on_each_stream_alone(causal: bool) -> None:
    torch.manual_seed(0)
    config = TransformerConfig(dim=16, heads=2, layers=2, dropout=0.0, causal=causal)
    transformer = Transformer(config).eval()
    pasts, lengths = [0, 3, 7], [4, 2, 4]
    caches = []
    with torch.no_grad():
        for past in pasts:  # each stream's own history
            _, cache = transformer.step(torch.randn(1, past, 16), empty_cache(config, 1)) if past else \
                (None, empty_cache(config, 1))
            caches.append(cache)
        x = torch.randn(3, 4, 16)
        cache, past = stack_caches(caches)
        assert past.tolist() == pasts and cache[0].length == 7
        out, new_cache = transformer.step_rows(x, cache, past, torch.tensor(lengths))
        for row, (own, length) in enumerate(zip(caches, lengths)):
            alone, alone_cache = transformer.step(x[row:row + 1, :length], own)
            torch.testing.assert_close(out[row:row + 1, :length], alone, atol=1e-5, rtol=1e-5)
            mine = unstack_cache(new_cache, slice(row, row + 1), pasts[row], length, 7)
            for got, want in zip(mine, alone_cache):
                torch.testing.assert_close(got.key, want.key, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(got.value, want.value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_step_into_buffers_equals_step_on_each_stream_alone_and_writes_only_its_new_positions(causal: bool) -> None:
    torch.manual_seed(0)
    config = TransformerConfig(dim=16, heads=2, layers=2, dropout=0.0, causal=causal)
    transformer = Transformer(config).eval()
    pasts, lengths, capacity = [0, 3, 7], [4, 2, 4], 12
    histories = [torch.randn(1, past, 16) for past in pasts]
    x = torch.randn(3, 4, 16)
    with torch.no_grad():
        buffers = [kv_buffer(config, 1, capacity) for _ in pasts]
        for buffer, history, past in zip(buffers, histories, pasts):  # each stream's own history, in its buffer
            transformer.step_into(history, [BufferPass(buffer, 0, past)])
        untouched = [buffer.key[..., past + length:, :].clone() for buffer, past, length in zip(buffers, pasts, lengths)]
        out = transformer.step_into(x, [BufferPass(b, p, n) for b, p, n in zip(buffers, pasts, lengths)])
        for row, (buffer, history, past, length) in enumerate(zip(buffers, histories, pasts, lengths)):
            _, own = transformer.step(history, empty_cache(config, 1)) if past else (None, empty_cache(config, 1))
            alone, alone_cache = transformer.step(x[row:row + 1, :length], own)
            torch.testing.assert_close(out[row:row + 1, :length], alone, atol=1e-5, rtol=1e-5)
            for layer, want in enumerate(alone_cache):
                torch.testing.assert_close(buffer.key[layer, :, :, :past + length], want.key, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(buffer.value[layer, :, :, :past + length], want.value, atol=1e-5,
                                           rtol=1e-5)
            assert torch.equal(buffer.key[..., past + length:, :], untouched[row])


def test_step_into_refuses_a_pass_that_does_not_fit_its_buffer() -> None:
    config = TransformerConfig(dim=16, heads=2, layers=1, dropout=0.0, causal=False)
    transformer = Transformer(config).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="does not fit a buffer of 6"):
        transformer.step_into(torch.randn(1, 4, 16), [BufferPass(kv_buffer(config, 1, 6), 3, 4)])
    with torch.no_grad(), pytest.raises(ValueError, match="the streams hold 1 rows, the input 2"):
        transformer.step_into(torch.randn(2, 4, 16), [BufferPass(kv_buffer(config, 1, 6), 0, 4)])


def test_batched_conditioning_has_each_sentence_durations_and_frames(synth: Synthesizer) -> None:
    sentences = [synth.sentences(text)[0] for text in TEXTS]
    requests = [Call(synth.backend.condition, (s.ids, i % 3, 1.0)) for i, s in enumerate(sentences)]
    for request, batched in zip(requests, calls.run_batch(requests)):
        alone = request.run()
        assert np.array_equal(batched.durations, alone.durations) and batched.frames == alone.frames
        torch.testing.assert_close(batched.cond, alone.cond, atol=1e-5, rtol=1e-5)


def test_block_passes_asking_for_different_codebooks_share_one_pass_and_get_their_alone_logits(
        synth: Synthesizer) -> None:
    """Out-of-phase sessions: one at a first-codebook pass, one at its fine pass, one a block further on."""
    from tokenspeech.decoding.masked import MASK

    backend, blocks = synth.backend, synth.backend.blocks()
    conds = [backend.condition(synth.sentences(text)[0].ids, 0, 1.0).cond for text in TEXTS[:3]]
    states = [blocks.prepare(cond) for cond in conds]
    rng = np.random.default_rng(0)
    first = rng.integers(0, 32, size=(1, 3, 4))
    states[2] = blocks.commit(first, 0, blocks.block_logits(first, 0, (1, 2), states[2])[1])  # one block of context
    tokens = [np.full((1, 3, 4), MASK), np.concatenate([first[:, :1], np.full((1, 2, 4), MASK)], axis=1),
              np.full((1, 3, 3), MASK)]
    requests = [Call(blocks.block_logits, (tokens[0], 0, (0,), states[0], False)),
                Call(blocks.block_logits, (tokens[1], 0, (1, 2), states[1], False)),
                Call(blocks.block_logits, (tokens[2], 4, (0,), states[2], False))]
    assert len(calls.group_calls(requests)) == 1
    for request, (logits, state) in zip(requests, calls.run_batch(requests)):
        written = state.cache.buffer.key.clone()  # the batched pass wrote its keys after the committed ones
        alone_logits, alone_state = request.run()  # rewrites the same positions of the same buffer
        assert logits.shape == alone_logits.shape
        np.testing.assert_allclose(logits, alone_logits, atol=1e-4, rtol=1e-4)
        assert alone_state.cache.buffer is state.cache.buffer and state.pending.start == alone_state.pending.start
        end = state.cache.length + request.args[0].shape[2]
        torch.testing.assert_close(written[..., :end, :], state.cache.buffer.key[..., :end, :], atol=1e-5, rtol=1e-5)


def _sessions(decoders: list[str], guidance: float = 0.0,
              fine_guidance: float | None = None) -> list[tuple[str, SynthesisOptions]]:
    return [(TEXTS[i % len(TEXTS)], SynthesisOptions(decoder=decoder, seed=i, steps=2, block_frames=4,
                                                     guidance=guidance, fine_guidance=fine_guidance,
                                                     voice=("joe", "espeak-us")[i % 2]))
            for i, decoder in enumerate(decoders)]


@pytest.mark.parametrize("decoders,guidance,fine_guidance", [
    (["semiar"] * 4, 0.0, None), (["semiar"] * 3, 1.5, None), (["semiar"] * 3, 0.0, 2.0), (["nar"] * 4, 0.0, None),
    (["ar"] * 3, 0.0, None), (["semiar", "nar", "ar", "semiar"], 0.0, None)])
def test_sessions_run_together_get_the_tokens_and_audio_they_get_alone(synth: Synthesizer, batch_sizes: Counter,
                                                                      decoders: list[str], guidance: float,
                                                                      fine_guidance: float | None) -> None:
    sessions = _sessions(decoders, guidance, fine_guidance)
    alone_tokens = [list(calls.outputs(synth._sentence_tokens(synth.sentences(t), o, {}))) for t, o in sessions]
    alone_chunks = [list(synth.stream(t, o)) for t, o in sessions]
    batch_sizes.clear()
    together_tokens = calls.run_together([synth._sentence_tokens(synth.sentences(t), o, {}) for t, o in sessions])
    together_chunks = calls.run_together([synth.stream_program(t, o) for t, o in sessions])
    assert max(size for _, size in batch_sizes) > 1, "no pass was batched"
    for alone, together in zip(alone_tokens, together_tokens):
        assert len(alone) == len(together)
        for (i, _, block, final), (j, _, block2, final2) in zip(alone, together):
            assert (i, final) == (j, final2) and np.array_equal(block, block2)
    for alone, together in zip(alone_chunks, together_chunks):
        assert [(c.sentence, c.frames, c.final) for c in alone] == [(c.sentence, c.frames, c.final) for c in together]
        np.testing.assert_allclose(np.concatenate([c.audio for c in together]),
                                   np.concatenate([c.audio for c in alone]), atol=1e-5)


def test_semiar_passes_of_concurrent_streams_merge_into_one_pass_per_turn(synth: Synthesizer,
                                                                          batch_sizes: Counter) -> None:
    options = SynthesisOptions(decoder="semiar", seed=0, steps=2, block_frames=4)
    calls.run_together([synth.stream_program("Hello there, this is a test.", replace(options, seed=s))
                        for s in range(4)])
    assert batch_sizes[("TorchBlockModel", 4)] > 0 and batch_sizes[("CodecSteps", 4)] > 0


@pytest.fixture(scope="module")
def onnx_synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    from tokenspeech import runtime
    from tokenspeech.runtime.sessions import RuntimeOptions

    root = tmp_path_factory.mktemp("export")
    export_tiny_models(tmp_path_factory.mktemp("models"), root)
    return runtime.load(root, RuntimeOptions(provider="cpu", intra_op_threads=1, inter_op_threads=1)).synthesizer()


@pytest.mark.parametrize("decoder", ["semiar", "nar", "ar"])
def test_onnx_sessions_at_the_same_position_share_passes_and_get_their_alone_audio(
        onnx_synth: Synthesizer, batch_sizes: Counter, decoder: str) -> None:
    synth = onnx_synth
    sessions = [(TEXTS[0], SynthesisOptions(decoder=decoder, seed=seed, steps=2, block_frames=4)) for seed in range(3)]
    alone = [list(synth.stream(t, o)) for t, o in sessions]
    batch_sizes.clear()
    together = calls.run_together([synth.stream_program(t, o) for t, o in sessions])
    assert max(size for (kind, size) in batch_sizes if kind.startswith("Onnx")) == 3
    for mine, reference in zip(together, alone):
        assert [c.frames for c in mine] == [c.frames for c in reference]
        np.testing.assert_allclose(np.concatenate([c.audio for c in mine]),
                                   np.concatenate([c.audio for c in reference]), atol=1e-5)


def test_a_failing_call_fails_only_its_own_program() -> None:
    class Doubler:
        def double(self, x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            return 2 * x

        def batch_key(self, call: Call) -> str:
            return "double"

        def run_batch(self, group):
            return [self.double(call.args[0]) for call in group]

    model = Doubler()

    def program(x: int):
        try:
            yield (yield Call(model.double, (x,)))
        except ValueError:
            yield "failed"

    assert calls.run_together([program(1), program(-1), program(3)]) == [[2], ["failed"], [6]]

    def nested(x: int):  # the error reaches the inner program through a reader of its outputs
        inner = calls.Outputs(program(x))
        while (item := (yield from inner.next())) is not calls.END:
            yield item

    assert calls.run_together([nested(-1), nested(2)]) == [["failed"], [4]]
