"""Semi-autoregressive (blockwise) decoding over a :class:`BlockModel`. NumPy only.

Axes: B batch, K codebooks, S frames of one block, G codebooks per pass, V codebook size.

Frames are produced in blocks of ``block_frames``: each block is decoded in
parallel by :class:`MaskedIterativeDecoder` (a few passes), attending to
every earlier block and to itself; then it is committed to the model's
context (a KV cache) and yielded, so a consumer (the codec's streaming
decoder) can turn it into audio while the next block is generated.

Each block draws its random numbers from its own generator seeded by
``(seed, block index)``, so the tokens do not depend on how far a consumer
has read: a stream and a one-shot run give identical tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from tokenspeech.decoding import calls
from tokenspeech.decoding.calls import Call, Program
from tokenspeech.decoding.masked import MASK, LogitsCall, MaskedDecodingOptions, MaskedIterativeDecoder, Side

StateT = TypeVar("StateT")


class BlockModel(Protocol[StateT]):
    """A masked-token model that extends a cached context one block at a time."""

    def block_logits(self, tokens: np.ndarray, start: int, codebooks: Sequence[int], state: StateT,
                     unconditional: Side = False) -> tuple[np.ndarray, StateT]:
        """Block ``tokens [B, K, S]`` at frames ``start..start+S-1`` -> ``logits [B, G, S, V]``, state.

        The block sees the committed context and itself; nothing later.
        ``unconditional`` as in :meth:`tokenspeech.decoding.masked.MaskedModel.logits`
        (:data:`~tokenspeech.decoding.masked.BOTH`: ``[2, B, G, S, V]``).
        """
        ...

    def commit(self, tokens: np.ndarray, start: int, state: StateT) -> StateT:
        """Append the finished block ``tokens [B, K, S]`` (no ``MASK``) to the context."""
        ...


@dataclass(frozen=True)
class SemiARDecodingOptions:
    """Block size in frames and how each block is unmasked."""

    block_frames: int = 8
    masked: MaskedDecodingOptions = field(default_factory=lambda: MaskedDecodingOptions(steps=4))

    def __post_init__(self) -> None:
        if self.block_frames < 1:
            raise ValueError("block_frames must be >= 1")


def block_call(model: BlockModel, start: int) -> LogitsCall:
    """Passes of ``model.block_logits`` over the block at ``start``: the block seen as a masked model."""
    def call(tokens: np.ndarray, codebooks: tuple[int, ...], state: object, unconditional: Side) -> Call:
        return Call(model.block_logits, (tokens, start, codebooks, state, unconditional))

    return call


class SemiARDecoder:
    """Decodes ``frames`` frames block by block; see the module docstring.

    The loop is :meth:`stream`, a program (:mod:`tokenspeech.decoding.calls`) whose outputs are the blocks.
    """

    def __init__(self, options: SemiARDecodingOptions) -> None:
        self.options = options
        self.masked = MaskedIterativeDecoder(options.masked)

    def blocks(self, frames: int) -> list[tuple[int, int]]:
        """``(start, length)`` of every block; the last one may be shorter."""
        size = self.options.block_frames
        return [(start, min(size, frames - start)) for start in range(0, frames, size)]

    def stream(self, model: BlockModel, state: object, batch: int, codebooks: int, frames: int) -> Program[None]:
        """Yields the model calls and, as outputs, each finished block ``[B, K, S] int64`` once committed."""
        for index, (start, length) in enumerate(self.blocks(frames)):
            rng = np.random.default_rng([self.options.masked.seed, index])
            tokens = np.full((batch, codebooks, length), MASK, dtype=np.int64)
            tokens, state = yield from calls.calls_only(self.masked.passes(block_call(model, start), state, tokens,
                                                                           rng))
            state = yield Call(model.commit, (tokens, start, state))
            yield tokens

    def iterate(self, model: BlockModel, state: object, batch: int, codebooks: int,
                frames: int) -> Iterator[np.ndarray]:
        """Yield each finished block ``[B, K, S] int64`` as soon as it is committed."""
        return calls.outputs(self.stream(model, state, batch, codebooks, frames))

    def run(self, model: BlockModel, state: object, batch: int, codebooks: int, frames: int) -> np.ndarray:
        """All blocks concatenated: ``[B, K, frames]``."""
        blocks = list(self.iterate(model, state, batch, codebooks, frames))
        if not blocks:
            return np.zeros((batch, codebooks, 0), dtype=np.int64)
        return np.concatenate(blocks, axis=2)
