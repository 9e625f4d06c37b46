"""The model interfaces decoding strategies use.

Axes: B batch (or beams), S new positions, V vocabulary.

A backend (PyTorch module wrapper or ONNX session wrapper) implements these
for one model. State is whatever the backend needs (KV caches, encoder
memory); strategies never look inside it, they only pass it back and ask the
backend to keep a subset of rows (beam search, finished sequences).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np

StateT = TypeVar("StateT")


class StepModel(Protocol[StateT]):
    """An autoregressive model: new tokens in, next-token logits out."""

    def step(self, tokens: np.ndarray, state: StateT) -> tuple[np.ndarray, StateT]:
        """``tokens [B, S] int64`` after the cached positions -> ``logits [B, S, V] float32``, new state."""
        ...

    def select(self, state: StateT, rows: np.ndarray) -> StateT:
        """Keep (and repeat or reorder) batch rows of ``state``: ``rows [B'] int64`` indexes old rows."""
        ...
