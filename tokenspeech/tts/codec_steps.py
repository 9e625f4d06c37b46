"""Streaming codec decoding of many synthesis streams as one batched pass. Torch-free.

:class:`CodecSteps` wraps a codec (``AudioTokenizer``) as a
:class:`tokenspeech.decoding.calls.BatchedModel`: ``decode_step`` calls of
different streams with the same code shape ``[1, K, S]`` run as one
``decode_step`` over their stacked states. That needs nothing of the codec
but a streaming state made of batch-first arrays (NumPy or torch) inside
dataclasses, tuples, lists or dicts, which both the PyTorch codec
(``DecoderState``) and the ONNX one (``OnnxCodecState``) are; every row of a
codec step depends only on its own state and codes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any

import numpy as np

from tokenspeech.codecs.base import AudioTokenizer
from tokenspeech.decoding.calls import Call


class CodecSteps:
    """``decode_step`` of one codec, batchable across streams; see the module docstring."""

    def __init__(self, codec: AudioTokenizer) -> None:
        self.codec = codec

    def decode_step(self, codes: np.ndarray, state: Any) -> tuple[Any, Any]:
        """``codes [B, K, S]`` -> ``(audio [B, 1, S * hop], state)``, as ``codec.decode_step``."""
        return self.codec.decode_step(codes, state)

    def batch_key(self, call: Call) -> Hashable | None:
        if call.method != self.decode_step:
            return None
        codes, _ = call.args
        return self, tuple(np.shape(codes)[1:])

    def run_batch(self, calls: Sequence[Call]) -> list[tuple[Any, Any]]:
        codes = np.concatenate([np.asarray(call.args[0]) for call in calls])
        audio, state = self.codec.decode_step(codes, stack_rows([call.args[1] for call in calls]))
        results, start = [], 0
        for call in calls:
            stop = start + len(call.args[0])
            results.append((take_rows(audio, start, stop), take_rows(state, start, stop)))
            start = stop
        return results


def stack_rows(trees: Sequence[Any]) -> Any:
    """One tree whose arrays are the row-wise concatenation of the same arrays in ``trees``."""
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, np.ndarray):
        return np.concatenate(trees)
    if is_dataclass(first):
        return replace(first, **{f.name: stack_rows([getattr(t, f.name) for t in trees]) for f in fields(first)})
    if isinstance(first, (tuple, list)):
        return type(first)(stack_rows(parts) for parts in zip(*trees))
    if isinstance(first, dict):
        return {key: stack_rows([t[key] for t in trees]) for key in first}
    if hasattr(first, "detach"):  # a torch tensor, without importing torch here
        import torch

        return torch.cat(list(trees))
    raise TypeError(f"cannot stack a streaming state holding {type(first).__name__}")


def take_rows(tree: Any, start: int, stop: int) -> Any:
    """The tree of rows ``start:stop`` of every array in ``tree``."""
    if tree is None:
        return None
    if isinstance(tree, np.ndarray) or hasattr(tree, "detach"):
        return tree[start:stop]
    if is_dataclass(tree):
        return replace(tree, **{f.name: take_rows(getattr(tree, f.name), start, stop) for f in fields(tree)})
    if isinstance(tree, (tuple, list)):
        return type(tree)(take_rows(part, start, stop) for part in tree)
    if isinstance(tree, dict):
        return {key: take_rows(value, start, stop) for key, value in tree.items()}
    raise TypeError(f"cannot split a streaming state holding {type(tree).__name__}")
