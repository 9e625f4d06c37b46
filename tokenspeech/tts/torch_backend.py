"""PyTorch adapters from :class:`TtsModel` to the NumPy decoding protocols.

- :class:`TorchMaskedModel`: :class:`tokenspeech.decoding.masked.MaskedModel` (whole sentence, full attention)
- :class:`TorchBlockModel`: :class:`tokenspeech.decoding.semiar.BlockModel` (KV cache of committed blocks)
- :class:`TorchArStep`: :class:`tokenspeech.decoding.base.StepModel` for :class:`ARDecoder` (first codebook)

State stays torch tensors (conditioning, caches); only tokens and logits
cross the boundary as NumPy arrays (``torch.from_numpy`` / ``.numpy()``, no
copies for contiguous arrays). ``MASK`` (-1) becomes the mask embedding ``V``.

Axes: B batch, N phonemes, F frames, S new frames, K codebooks, G codebooks per pass, V codebook size, D dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from tokenspeech.decoding.masked import MASK
from tokenspeech.errors import ConfigError
from tokenspeech.models.transformer import LayerCache, attention_mask, empty_cache
from tokenspeech.models.tts import TtsModel, predicted_durations
from tokenspeech.tts.backend import Conditioning


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def _codes(tokens: np.ndarray, mask_id: int) -> Tensor:
    codes = _tensor(tokens)
    return torch.where(codes == MASK, torch.full_like(codes, mask_id), codes)


class TorchTtsBackend:
    """The front half of synthesis (text -> conditioning) and factories for the three decoding adapters."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model.eval()
        self.config = model.config

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @torch.inference_mode()
    def condition(self, phonemes: np.ndarray, voice: int, rate: float = 1.0,
                  durations: np.ndarray | None = None) -> Conditioning:
        """``phonemes [N]`` ids -> :class:`Conditioning`; durations predicted (divided by ``rate``) unless given."""
        ids = _tensor(np.asarray(phonemes)[None])
        speaker = torch.tensor([voice], dtype=torch.long)
        h, log_durations = self.model.encode_text(ids, speaker)
        frames = predicted_durations(log_durations, rate) if durations is None else _tensor(np.asarray(durations)[None])
        cond, _ = self.model.condition(h, frames, speaker)
        return Conditioning(cond, frames[0].numpy().copy())

    def masked(self) -> TorchMaskedModel:
        return TorchMaskedModel(self.model)

    def blocks(self) -> TorchBlockModel:
        return TorchBlockModel(self.model)

    def ar(self) -> TorchArStep:
        if self.model.ar is None:
            raise ConfigError("this TTS model has no AR codec LM (ar_layers = 0); use decoder nar or semiar")
        return TorchArStep(self.model)


@dataclass(frozen=True)
class MaskedState:
    """Conditioning ``[B, F, D]`` (and its unconditional twin) for whole-sequence passes."""

    cond: Tensor
    uncond: Tensor
    mask: Tensor | None = None  # [B, 1, 1, F] key padding, None when every row is full length


class TorchMaskedModel:
    """MaskedModel over :class:`MaskedCodecTransformer` with full (bidirectional) attention."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model

    def prepare(self, cond: Tensor, lengths: Tensor | None = None) -> MaskedState:
        mask = None if lengths is None else attention_mask(lengths, cond.shape[1], causal=False)
        return MaskedState(cond, self.model.conditioner.unconditional(cond), mask)

    @torch.inference_mode()
    def logits(self, tokens: np.ndarray, codebooks: Sequence[int], state: MaskedState,
               unconditional: bool = False) -> tuple[np.ndarray, MaskedState]:
        codes = _codes(tokens, self.model.config.mask_id)
        hidden = self.model.codec(codes, state.uncond if unconditional else state.cond, state.mask)
        logits = self.model.codec.heads(hidden, list(codebooks))
        return logits.float().numpy(), state


@dataclass(frozen=True)
class _Pending:
    """The cache a block pass produced, kept until :meth:`TorchBlockModel.commit` may reuse it."""

    start: int
    tokens: np.ndarray  # [B, K, S] the pass' input
    cache: list[LayerCache]


@dataclass(frozen=True)
class BlockState:
    """Committed context of one stream: KV caches (conditional and, with guidance, unconditional)."""

    cond: Tensor  # [B, F, D]
    uncond: Tensor | None
    cache: list[LayerCache]
    uncond_cache: list[LayerCache] | None
    pending: _Pending | None = None
    pending_uncond: _Pending | None = None


class TorchBlockModel:
    """BlockModel over :class:`MaskedCodecTransformer`, cached with ``Transformer.step`` (non-causal).

    Committed blocks enter the context showing only their first
    ``config.context_codebooks`` codebooks (the rest masked), as in training.
    When the last pass of a block had exactly that input, its cache is
    reused, so committing costs no extra pass.
    """

    def __init__(self, model: TtsModel) -> None:
        self.model = model
        self.config = model.config

    def prepare(self, cond: Tensor, guidance: bool = False) -> BlockState:
        transformer = self.model.codec.transformer.config
        batch = cond.shape[0]
        uncond = self.model.conditioner.unconditional(cond) if guidance else None
        return BlockState(cond, uncond, empty_cache(transformer, batch, cond.device),
                          empty_cache(transformer, batch, cond.device) if guidance else None)

    def _pass(self, tokens: np.ndarray, start: int, cond: Tensor,
              cache: list[LayerCache]) -> tuple[Tensor, list[LayerCache]]:
        codes = _codes(tokens, self.config.mask_id)
        x = self.model.codec.inputs(codes, cond[:, start:start + codes.shape[2]])
        return self.model.codec.transformer.step(x, cache)

    @torch.inference_mode()
    def block_logits(self, tokens: np.ndarray, start: int, codebooks: Sequence[int], state: BlockState,
                     unconditional: bool = False) -> tuple[np.ndarray, BlockState]:
        if unconditional and state.uncond is None:
            raise RuntimeError("prepare the block state with guidance=True to use guidance")
        cond, cache = (state.uncond, state.uncond_cache) if unconditional else (state.cond, state.cache)
        hidden, new_cache = self._pass(tokens, start, cond, cache)
        logits = self.model.codec.heads(hidden, list(codebooks))
        pending = _Pending(start, np.array(tokens, dtype=np.int64), new_cache)
        state = replace(state, pending_uncond=pending) if unconditional else replace(state, pending=pending)
        return logits.float().numpy(), state

    @torch.inference_mode()
    def commit(self, tokens: np.ndarray, start: int, state: BlockState) -> BlockState:
        view = np.array(tokens, dtype=np.int64)
        view[:, self.config.context_codebooks:] = MASK
        cache = self._extend(view, start, state.cond, state.cache, state.pending)
        uncond_cache = None if state.uncond is None else self._extend(view, start, state.uncond,
                                                                      state.uncond_cache, state.pending_uncond)
        return BlockState(state.cond, state.uncond, cache, uncond_cache)

    def _extend(self, view: np.ndarray, start: int, cond: Tensor, cache: list[LayerCache],
                pending: _Pending | None) -> list[LayerCache]:
        if pending is not None and pending.start == start and np.array_equal(pending.tokens, view):
            return pending.cache
        return self._pass(view, start, cond, cache)[1]


@dataclass(frozen=True)
class ArState:
    """AR LM context: conditioning ``[B, F, D]``, KV cache, next frame index."""

    cond: Tensor
    cache: list[LayerCache]
    position: int


class TorchArStep:
    """StepModel over :class:`ArCodecLM`: tokens are the previous first-codebook codes (``V`` = BOS)."""

    def __init__(self, model: TtsModel) -> None:
        self.model = model
        self.ar = model.ar

    @property
    def bos_id(self) -> int:
        return self.model.config.mask_id

    def prepare(self, cond: Tensor) -> ArState:
        return ArState(cond, empty_cache(self.ar.transformer.config, cond.shape[0], cond.device), 0)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: ArState) -> tuple[np.ndarray, ArState]:
        ids = _tensor(tokens)
        cond = state.cond[:, state.position:state.position + ids.shape[1]]
        hidden, cache = self.ar.transformer.step(cond + self.ar.embed(ids), state.cache)
        return self.ar.head(hidden).float().numpy(), ArState(state.cond, cache, state.position + ids.shape[1])

    def select(self, state: ArState, rows: np.ndarray) -> ArState:
        index = _tensor(rows)
        return ArState(state.cond[index], [LayerCache(c.key[index], c.value[index]) for c in state.cache],
                       state.position)
