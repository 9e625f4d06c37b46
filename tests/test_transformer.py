"""The shared transformer: cached steps equal the full pass; masks hide padding and the future."""

from __future__ import annotations

import pytest
import torch

from tokenspeech.models.transformer import Transformer, TransformerConfig, attention_mask, empty_cache


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(dim=32, heads=4, layers=2, dropout=0.0, **overrides)
    return Transformer(config).eval()


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_causal_steps_equal_full_pass(chunk: int) -> None:
    model = tiny()
    x = torch.randn(2, 14, 32)
    full = model(x)
    cache = empty_cache(model.config, 2)
    pieces = []
    for start in range(0, 14, chunk):
        y, cache = model.step(x[:, start:start + chunk], cache)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0].length == 14


def test_cross_attention_steps_equal_full_pass() -> None:
    model = tiny(cross_attention=True)
    x, memory = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    lengths = torch.tensor([9, 5])
    full = model(x, memory=memory, memory_lengths=lengths)
    memory_kv = model.memory_kv(memory)
    memory_mask = attention_mask(lengths, 9, causal=False)
    cache, pieces = empty_cache(model.config, 2), []
    for t in range(6):
        y, cache = model.step(x[:, t:t + 1], cache, memory_kv, memory_mask)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_padding_does_not_leak() -> None:
    model = tiny(causal=False)
    x = torch.randn(1, 8, 32)
    padded = torch.cat([x, torch.randn(1, 4, 32)], dim=1)
    out = model(padded, lengths=torch.tensor([8]))
    torch.testing.assert_close(out[:, :8], model(x), atol=1e-5, rtol=1e-5)


def test_future_does_not_leak_when_causal() -> None:
    model = tiny()
    x = torch.randn(1, 10, 32)
    changed = x.clone()
    changed[:, 6:] = torch.randn(1, 4, 32)
    torch.testing.assert_close(model(x)[:, :6], model(changed)[:, :6])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(dim=30, heads=4)
