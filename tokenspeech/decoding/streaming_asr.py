"""Streaming recognition logic: audio framing, semi-AR blockwise decoding, streaming CTC. NumPy only.

Axes: T encoder frames, D model dim, V vocabulary, N tokens, S samples.

Semi-AR (blockwise) decoding: the encoder emits frames in chunks of
``chunk`` frames. For each chunk, CIF integrates the new frames' weights and
fires the tokens completed in it; those tokens (one *block*) are decoded in
parallel by the parallel decoder, which also sees (through its cache) the
labels of all earlier blocks and every encoder frame so far. The block's
argmax labels are then fed back as context for later blocks. Tokens only
ever get appended, so interim results grow monotonically; the last block
(CIF tail) is decoded by :meth:`SemiARStreamer.finish`.

The model side is a :class:`BlockDecoderModel` (PyTorch or ONNX backend);
this module never looks into its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from tokenspeech.decoding.cif import CifOutput, CifState, cif_finish, cif_step
from tokenspeech.decoding.ctc import CtcPrefixBeam, ctc_align

StateT = TypeVar("StateT")


class BlockDecoderModel(Protocol[StateT]):
    """The parallel decoder used blockwise, with label context and growing encoder memory."""

    def add_memory(self, frames: np.ndarray, state: StateT) -> StateT:
        """Append encoder frames ``[T, D]`` to the memory the decoder attends to."""
        ...

    def decode_block(self, acoustic: np.ndarray, state: StateT) -> np.ndarray:
        """Logits ``[N, V]`` of a block from its CIF embeddings ``[N, D]`` (state unchanged)."""
        ...

    def add_context(self, tokens: np.ndarray, state: StateT) -> StateT:
        """Feed decided labels ``[N] int64`` as context for later blocks."""
        ...


@dataclass(frozen=True)
class StreamingHypothesis:
    """Tokens so far with CIF frame spans ``[start, fire]`` (encoder frames) of each token."""

    tokens: tuple[int, ...] = ()
    starts: tuple[int, ...] = ()
    fires: tuple[int, ...] = ()
    final: bool = False


@dataclass
class SemiARStreamer(Generic[StateT]):
    """Blockwise decoding of one stream; ``push`` encoder chunks as they come, then ``finish``."""

    model: BlockDecoderModel[StateT]
    state: StateT
    chunk: int
    tail_threshold: float = 0.5
    cif: CifState = field(default_factory=CifState)
    hypothesis: StreamingHypothesis = field(default_factory=StreamingHypothesis)

    def push(self, frames: np.ndarray, alphas: np.ndarray) -> StreamingHypothesis:
        """New encoder ``frames [T, D]`` and their CIF weights ``alphas [T]`` -> interim hypothesis.

        Frames are handled ``chunk`` at a time (the block the decoder was
        trained with), whatever the caller's piece size.
        """
        for start in range(0, len(frames), self.chunk):
            piece = slice(start, start + self.chunk)
            self.state = self.model.add_memory(frames[piece], self.state)
            fired, self.cif = cif_step(alphas[piece], frames[piece], self.cif)
            self._decode(fired)
        return self.hypothesis

    def finish(self) -> StreamingHypothesis:
        """Decode the CIF tail and mark the hypothesis final."""
        self._decode(cif_finish(self.cif, self.tail_threshold))
        h = self.hypothesis
        self.hypothesis = StreamingHypothesis(h.tokens, h.starts, h.fires, final=True)
        return self.hypothesis

    def _decode(self, fired: CifOutput) -> None:
        if not len(fired.fires):
            return
        tokens = self.model.decode_block(fired.embeddings, self.state).argmax(axis=-1).astype(np.int64)
        self.state = self.model.add_context(tokens, self.state)
        h = self.hypothesis
        self.hypothesis = StreamingHypothesis(h.tokens + tuple(tokens.tolist()),
                                              h.starts + tuple(fired.starts.tolist()),
                                              h.fires + tuple(fired.fires.tolist()))


@dataclass
class CtcStreamer:
    """CTC over a stream of log-probability pieces ``[T, V]``: greedy (repeats merged across pieces), or the
    prefix beam search ``search`` (with its language model) when given, whose final result equals the
    offline search over the whole stream."""

    blank: int = 0
    search: CtcPrefixBeam | None = None
    frames: int = 0
    previous: int = 0
    tokens: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    pieces: list[np.ndarray] = field(default_factory=list)  # with a search: every frame, for the final spans

    def push(self, log_probs: np.ndarray) -> StreamingHypothesis:
        if self.search is not None:
            self.search.push(log_probs)
            self.pieces.append(np.asarray(log_probs))
            self.frames += len(log_probs)
            return self.hypothesis()
        for token in np.asarray(log_probs).argmax(axis=-1).tolist():
            if token != self.blank and token == self.previous:
                self.ends[-1] = self.frames + 1
            elif token != self.blank:
                self.tokens.append(token)
                self.starts.append(self.frames)
                self.ends.append(self.frames + 1)
            self.previous = token
            self.frames += 1
        return self.hypothesis()

    def hypothesis(self, final: bool = False) -> StreamingHypothesis:
        """Tokens so far; ``fires`` holds each token's end frame (exclusive) minus one.

        With a search, an interim hypothesis is the part every beam agrees on
        (so interim results only grow), without spans; the final one is the
        best hypothesis aligned over all frames.
        """
        if self.search is None:
            return StreamingHypothesis(tuple(self.tokens), tuple(self.starts), tuple(e - 1 for e in self.ends),
                                       final)
        if not final:
            return StreamingHypothesis(self.search.stable())
        tokens = self.search.ranked()[0].tokens
        try:
            path = ctc_align(np.concatenate(self.pieces) if self.pieces else np.zeros((0, 1)), tokens, self.blank)
        except ValueError:
            return StreamingHypothesis(tokens, final=True)
        return StreamingHypothesis(path.tokens, path.starts, tuple(e - 1 for e in path.ends), True)


@dataclass
class AudioFramer:
    """Cuts a sample stream into pieces whose feature frames are complete and new.

    ``push(samples)`` returns the samples to featurise now ([S'] covering
    only whole frames not produced before); the ``win - hop`` overlap is kept
    for the next piece, so the concatenated features equal those of the
    whole signal (``center=False`` framing).
    """

    win_length: int
    hop_length: int
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def push(self, samples: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, dtype=np.float32).reshape(-1)])
        if len(self.buffer) < self.win_length:
            return self.buffer[:0]
        frames = 1 + (len(self.buffer) - self.win_length) // self.hop_length
        used = (frames - 1) * self.hop_length + self.win_length
        ready, self.buffer = self.buffer[:used], self.buffer[frames * self.hop_length:]
        return ready
