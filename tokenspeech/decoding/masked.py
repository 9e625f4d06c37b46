"""Masked iterative decoding (MaskGIT / MaskGCT / SoundStorm style) over a :class:`MaskedModel`. NumPy only.

Axes: B batch, K codebooks, F frames, G codebooks predicted in one pass, V codebook size.

Codebook 1 (index 0) starts fully masked and is filled in ``steps`` passes:
each pass samples a candidate for every masked position, scores it by its
log-probability (plus Gumbel noise that fades over the steps), and fixes the
most confident ones so that the number still masked follows a cosine
schedule and reaches 0 after exactly ``steps`` passes. Tokens once fixed
never change. Codebooks 2..K are then predicted coarse-to-fine in
``fine_passes`` passes (1 = all at once, K-1 = one codebook per pass),
greedily by default. Optional classifier-free guidance mixes conditional and
unconditional logits: ``cond + guidance * (cond - uncond)``; ``fine_guidance``
sets the scale of the fine passes apart (e.g. to guide only the pass that
predicts codebook 2 from codebook 1, where most words are lost, for one extra
pass instead of one per pass).

A guided pass is **one model call** asking for both sides (``unconditional=BOTH``):
the backend runs the conditional and the unconditional rows as one batched
pass. Two calls in a row cost a batched server two turns, and on a CPU two
passes of one row cost nearly twice one pass of two rows (docs/serving.md,
session 20).

Masked positions are ``MASK`` (-1) in the NumPy token arrays; the backend
maps them to its mask embedding. Positions the caller fills in beforehand
(a prompt, padding) are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from tokenspeech.decoding import calls
from tokenspeech.decoding.calls import Call, Program
from tokenspeech.decoding.sampling import SamplingOptions, log_softmax, select_tokens

MASK = -1
StateT = TypeVar("StateT")

BOTH = "both"
"""The ``unconditional`` argument of a guided pass: the call returns the conditional and the unconditional
logits stacked, ``[2, B, G, F, V]`` (index 0 conditional), from one batched pass."""

Side = bool | str  # False, True or BOTH


def sides(unconditional: Side) -> tuple[bool, ...]:
    """The one-sided passes an ``unconditional`` argument asks for."""
    if isinstance(unconditional, str):
        if unconditional != BOTH:
            raise ValueError(f"unconditional must be a bool or {BOTH!r}, got {unconditional!r}")
        return (False, True)
    return (bool(unconditional),)


def run_sided(calls_: Sequence[Call], side_index: int, run_one_sided: Callable[[list[Call]], Sequence[Any]],
              merge: Callable[[Any, Any], Any]) -> list[Any]:
    """Results of ``calls_`` (``(logits, state)`` each) whose ``args[side_index]`` may be :data:`BOTH`.

    A BOTH call becomes its conditional and unconditional one-sided calls in
    the same ``run_one_sided`` batch; its result is the two logits stacked and
    ``merge(conditional state, unconditional state)`` (a backend whose passes
    record something per side in the state keeps both records there).
    """
    flat: list[Call] = []
    owners: list[int] = []
    for index, call in enumerate(calls_):
        for side in sides(call.args[side_index]):
            args = list(call.args)
            args[side_index] = side
            flat.append(Call(call.method, tuple(args)))
            owners.append(index)
    results = list(run_one_sided(flat))
    parts: list[list[Any]] = [[] for _ in calls_]
    for owner, result in zip(owners, results):
        parts[owner].append(result)
    return [part[0] if len(part) == 1 else (np.stack([part[0][0], part[1][0]]), merge(part[0][1], part[1][1]))
            for part in parts]


def keep_state(conditional: StateT, unconditional: StateT) -> StateT:
    """The ``merge`` of :func:`run_sided` for states that passes do not change."""
    return conditional


class MaskedModel(Protocol[StateT]):
    """A masked-token model over whole sequences (or one block: see :mod:`tokenspeech.decoding.semiar`)."""

    def logits(self, tokens: np.ndarray, codebooks: Sequence[int], state: StateT,
               unconditional: Side = False) -> tuple[np.ndarray, StateT]:
        """``tokens [B, K, F] int64`` (``MASK`` = unknown) -> ``logits [B, G, F, V] float32`` for ``codebooks``.

        ``unconditional`` asks for the logits without the text/speaker
        conditioning (classifier-free guidance); :data:`BOTH` for both sides
        from one pass, ``[2, B, G, F, V]``. Returns the (possibly updated) state.
        """
        ...


@dataclass(frozen=True)
class MaskedDecodingOptions:
    """How to unmask; ``guidance == 0`` skips the unconditional pass."""

    steps: int = 8  # passes for the first codebook
    coarse_steps: tuple[int, ...] = ()  # passes for codebooks 2, 3, ...: filled iteratively like the first
    fine_passes: int = 1  # passes for the codebooks after those (1 = all at once)
    sampling: SamplingOptions = field(default_factory=lambda: SamplingOptions(temperature=1.0))
    fine_sampling: SamplingOptions = field(default_factory=lambda: SamplingOptions(temperature=0.0))
    noise: float = 1.0  # Gumbel noise scale on confidences at the first step, fading linearly to 0
    guidance: float = 0.0
    fine_guidance: float | None = None  # guidance of the fine passes; None = ``guidance``
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.fine_passes < 1:
            raise ValueError("fine_passes must be >= 1")
        if any(int(s) < 1 for s in self.coarse_steps):
            raise ValueError("every coarse_steps entry must be >= 1")
        if self.noise < 0 or self.guidance < 0 or (self.fine_guidance or 0.0) < 0:
            raise ValueError("noise, guidance and fine_guidance must be >= 0")

    @property
    def resolved_fine_guidance(self) -> float:
        return self.guidance if self.fine_guidance is None else self.fine_guidance

    @property
    def uses_guidance(self) -> bool:
        """Whether any pass needs the unconditional side (a block model must be prepared for it)."""
        return self.guidance > 0 or self.resolved_fine_guidance > 0


@dataclass(frozen=True)
class MaskedStep:
    """The tokens ``[B, K, F]`` (and model state) after one model pass that filled ``codebooks``."""

    codebooks: tuple[int, ...]
    step: int  # pass number within the first codebook, or fine pass number
    tokens: np.ndarray
    state: object


def cosine_schedule(masked: int, steps: int) -> np.ndarray:
    """Positions still masked after each of ``steps`` passes, starting from ``masked`` ``[steps] int64``.

    ``floor(masked * cos(pi/2 * (s + 1) / steps))``, but at least one fewer
    each pass while any remain (so ``masked >= steps`` unmasks at least one
    per pass); the last entry is 0.
    """
    s = np.arange(1, steps + 1)
    remaining = np.floor(masked * np.cos(0.5 * math.pi * s / steps)).astype(np.int64)
    remaining = np.minimum(remaining, np.maximum(masked - s, 0))
    remaining[-1] = 0
    return remaining


class LogitsCall(Protocol):
    """Makes the :class:`Call` of one logits pass (see :func:`logits_call`)."""

    def __call__(self, tokens: np.ndarray, codebooks: tuple[int, ...], state: object,
                 unconditional: Side) -> Call: ...


def logits_call(model: MaskedModel) -> LogitsCall:
    """Passes of ``model.logits``."""
    def call(tokens: np.ndarray, codebooks: tuple[int, ...], state: object, unconditional: Side) -> Call:
        return Call(model.logits, (tokens, codebooks, state, unconditional))

    return call


class MaskedIterativeDecoder:
    """Fills every ``MASK`` of a ``[B, K, F]`` token array by iterative parallel decoding.

    The loop is :meth:`passes`, a program (:mod:`tokenspeech.decoding.calls`);
    :meth:`run`, :meth:`iterate` and :meth:`program` drive or wrap it.
    """

    def __init__(self, options: MaskedDecodingOptions) -> None:
        self.options = options

    def run(self, model: MaskedModel, state: object, tokens: np.ndarray,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, object]:
        """Decode to the end; returns ``(tokens [B, K, F] without MASK, final state)``."""
        return calls.run(self.program(model, state, tokens, rng))

    def iterate(self, model: MaskedModel, state: object, tokens: np.ndarray,
                rng: np.random.Generator | None = None) -> Iterator[MaskedStep]:
        """Yield the tokens (and state) after every model pass; see the module docstring."""
        return calls.outputs(self.passes(logits_call(model), state, tokens, rng))

    def program(self, model: MaskedModel, state: object, tokens: np.ndarray,
                rng: np.random.Generator | None = None) -> Program[tuple[np.ndarray, object]]:
        """:meth:`run` as a program: yields the model calls, returns ``(tokens, state)``."""
        return calls.calls_only(self.passes(logits_call(model), state, tokens, rng))

    def passes(self, logits: LogitsCall, state: object, tokens: np.ndarray,
               rng: np.random.Generator | None = None) -> Program[tuple[np.ndarray, object]]:
        """The decoding loop: yields the :class:`Call` of every pass (made by ``logits``) and a
        :class:`MaskedStep` after it; returns ``(tokens, state)``."""
        rng = rng if rng is not None else np.random.default_rng(self.options.seed)
        tokens = np.array(tokens, dtype=np.int64, copy=True)
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be [B, K, F], got shape {tokens.shape}")
        iterative = [(0, self.options.steps, self.options.sampling)] + [
            (k, int(steps), self.options.fine_sampling)
            for k, steps in enumerate(self.options.coarse_steps[:tokens.shape[1] - 1], start=1)]
        for k, steps, sampling in iterative:
            masked = tokens[:, k] == MASK  # [B, F]
            if not masked.any():
                continue
            schedules = [cosine_schedule(int(m), steps) for m in masked.sum(axis=1)]
            for step in range(steps):
                scores, state = yield from self._logits(logits, tokens, (k,), state, self.options.guidance)
                tokens = self._unmask_step(tokens, k, scores[:, 0], [s[step] for s in schedules],
                                           (step + 1) / steps, sampling, rng)
                yield MaskedStep((k,), step, tokens.copy(), state)
        fine = [int(k) for k in range(len(iterative), tokens.shape[1]) if (tokens[:, k] == MASK).any()]
        for step, group in enumerate(np.array_split(np.array(fine, dtype=np.int64), self.options.fine_passes)):
            if len(group) == 0:
                continue
            codebooks = tuple(int(k) for k in group)
            scores, state = yield from self._logits(logits, tokens, codebooks, state,
                                                    self.options.resolved_fine_guidance)
            chosen = select_tokens(scores, self.options.fine_sampling, rng)  # [B, G, F]
            for g, k in enumerate(codebooks):
                tokens[:, k] = np.where(tokens[:, k] == MASK, chosen[:, g], tokens[:, k])
            yield MaskedStep(codebooks, step, tokens.copy(), state)
        return tokens, state

    @staticmethod
    def _logits(logits: LogitsCall, tokens: np.ndarray, codebooks: tuple[int, ...],
                state: object, guidance: float) -> Program[tuple[np.ndarray, object]]:
        if guidance <= 0:
            scores, state = yield logits(tokens, codebooks, state, False)
            return scores.astype(np.float32, copy=False), state
        both, state = yield logits(tokens, codebooks, state, BOTH)
        scores = both[0].astype(np.float32, copy=False)
        return scores + guidance * (scores - both[1].astype(np.float32, copy=False)), state

    def _unmask_step(self, tokens: np.ndarray, codebook: int, logits: np.ndarray, remaining: Sequence[int],
                     progress: float, sampling: SamplingOptions, rng: np.random.Generator) -> np.ndarray:
        """Fix the most confident candidates of ``codebook`` so that ``remaining[b]`` stay masked in row ``b``.

        ``progress`` is the fraction of the codebook's passes done after this one (the Gumbel noise fades with it).
        """
        masked = tokens[:, codebook] == MASK  # [B, F]
        candidates = select_tokens(logits, sampling, rng)  # [B, F]
        confidence = np.take_along_axis(log_softmax(logits), candidates[..., None], axis=-1)[..., 0]
        scale = self.options.noise * (1.0 - progress)
        if scale > 0:
            confidence = confidence + scale * rng.gumbel(size=confidence.shape)
        confidence = np.where(masked, confidence, -np.inf)
        rank = np.argsort(np.argsort(-confidence, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = best
        fix_count = masked.sum(axis=1) - np.asarray(remaining, dtype=np.int64)  # [B]
        fix = masked & (rank < fix_count[:, None])
        out = tokens.copy()
        out[:, codebook] = np.where(fix, candidates, tokens[:, codebook])
        return out
