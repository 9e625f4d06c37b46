"""Autoregressive decoding over a :class:`StepModel`: greedy, sampling, beam search.

Used by the attention ASR decoder (beam search over characters) and by the
AR TTS codec language model (sampling over first-codebook tokens). Both call
the same loop; only the options differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np

from tokenspeech.decoding import calls
from tokenspeech.decoding.base import StepModel
from tokenspeech.decoding.calls import Call, Program
from tokenspeech.decoding.sampling import SamplingOptions, log_softmax, select_tokens


class LogitProcessor(Protocol):
    def apply(self, logits: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """Adjust next-token ``logits [B, V]`` given the tokens so far ``[B, L]``."""
        ...


@dataclass(frozen=True)
class MinLength:
    """Forbid ``eos_id`` before ``min_length`` tokens were generated."""

    eos_id: int
    min_length: int

    def apply(self, logits: np.ndarray, generated: np.ndarray) -> np.ndarray:
        if generated.shape[1] < self.min_length:
            logits = logits.copy()
            logits[:, self.eos_id] = -np.inf
        return logits


@dataclass(frozen=True)
class ARDecodingOptions:
    """``beam_size == 1``: sample with ``sampling`` (temperature 0 = greedy); else beam search."""

    max_length: int
    eos_id: int
    beam_size: int = 1
    sampling: SamplingOptions = field(default_factory=lambda: SamplingOptions(temperature=0.0))
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")
        if self.beam_size < 1:
            raise ValueError("beam_size must be at least 1")


@dataclass(frozen=True)
class ARResult:
    """Generated tokens (without the final EOS) and their total log-probability."""

    tokens: list[int]
    score: float
    finished: bool


class ARDecoder:
    """Runs a :class:`StepModel` from a prepared state (prompt already consumed)."""

    def __init__(self, options: ARDecodingOptions, processors: Sequence[LogitProcessor] = ()) -> None:
        self.options = options
        self.processors = tuple(processors)

    def _next_logits(self, logits: np.ndarray, generated: np.ndarray) -> np.ndarray:
        for processor in self.processors:
            logits = processor.apply(logits, generated)
        return logits

    def iterate(self, model: StepModel, state: object, first_tokens: np.ndarray) -> Iterator[np.ndarray]:
        """Sample step by step; yields the new tokens ``[B]`` of each step (EOS rows keep yielding EOS).

        ``first_tokens [B]`` is the input of the first step (e.g. BOS). Stops
        when every row has produced EOS or ``max_length`` steps were taken.
        """
        return calls.outputs(self.stream(model, state, first_tokens))

    def stream(self, model: StepModel, state: object, first_tokens: np.ndarray) -> Program[None]:
        """:meth:`iterate` as a program (:mod:`tokenspeech.decoding.calls`): yields each ``model.step`` call and,
        as outputs, the new tokens of each step."""
        opts = self.options
        rng = np.random.default_rng(opts.seed)
        tokens = first_tokens.astype(np.int64)[:, None]
        generated = np.zeros((len(first_tokens), 0), dtype=np.int64)
        done = np.zeros(len(first_tokens), dtype=bool)
        for _ in range(opts.max_length):
            logits, state = yield Call(model.step, (tokens, state))
            logits = self._next_logits(logits[:, -1].astype(np.float32), generated)
            new = np.where(done, opts.eos_id, select_tokens(logits, opts.sampling, rng))
            done |= new == opts.eos_id
            generated = np.concatenate([generated, new[:, None]], axis=1)
            yield new
            if done.all():
                return
            tokens = new[:, None]

    def run(self, model: StepModel, state: object, first_tokens: np.ndarray) -> list[ARResult]:
        """Decode every row; beam search when ``beam_size > 1`` (one result per input row)."""
        if self.options.beam_size > 1:
            return [self._beam(model, model.select(state, np.array([row])), int(first_tokens[row]))
                    for row in range(len(first_tokens))]
        steps = list(self.iterate(model, state, first_tokens))
        results = []
        for row in range(len(first_tokens)):
            sequence = [int(step[row]) for step in steps]
            finished = self.options.eos_id in sequence
            if finished:
                sequence = sequence[: sequence.index(self.options.eos_id)]
            results.append(ARResult(sequence, 0.0, finished))
        return results

    def _beam(self, model: StepModel, state: object, first_token: int) -> ARResult:
        """Beam search for one input row whose state has batch size 1."""
        opts = self.options
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        tokens = np.array([[first_token]], dtype=np.int64)
        for _ in range(opts.max_length):
            logits, state = model.step(tokens, state)
            generated = np.array([b[0] for b in beams], dtype=np.int64).reshape(len(beams), -1)
            logprobs = log_softmax(self._next_logits(logits[:, -1].astype(np.float32), generated))
            totals = np.array([b[1] for b in beams], dtype=np.float32)[:, None] + logprobs
            order = np.argsort(-totals, axis=None)[: 2 * opts.beam_size]
            keep_rows, keep_tokens, kept = [], [], []
            for rank, flat in enumerate(order):
                row, token = divmod(int(flat), totals.shape[1])
                candidate = (beams[row][0] + [token], float(totals[row, token]))
                if token == opts.eos_id:
                    # an ending counts only when it ranks among the beam: beam 1 is exactly greedy
                    if rank < opts.beam_size:
                        finished.append((beams[row][0], candidate[1]))
                elif len(kept) < opts.beam_size:
                    keep_rows.append(row)
                    keep_tokens.append(token)
                    kept.append(candidate)
            if len(finished) >= opts.beam_size or not kept:
                break
            beams = kept
            state = model.select(state, np.array(keep_rows, dtype=np.int64))
            tokens = np.array(keep_tokens, dtype=np.int64)[:, None]
        pool = finished or beams
        best = max(pool, key=lambda b: b[1] / max(len(b[0]), 1) ** opts.length_penalty)
        return ARResult(best[0], best[1], bool(finished))
