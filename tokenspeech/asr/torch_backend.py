"""PyTorch adapters from the ASR model to the NumPy protocols of the recognizer and the decoding strategies.

``TorchAsrBackend`` is the :class:`tokenspeech.asr.engine.AsrBackend` over an
:class:`AsrModel` (features, encoder, heads, decoders; offline and streaming).
``TorchAttentionStep`` is a :class:`tokenspeech.decoding.base.StepModel` for
the AR attention decoder (``ARDecoder`` runs greedy and beam search over it);
``TorchBlockDecoder`` is a :class:`tokenspeech.decoding.streaming_asr.BlockDecoderModel`
for semi-AR streaming. State stays torch tensors; only tokens and logits
cross as NumPy arrays.

Axes: B batch (or beams), S new tokens, T encoder frames, D dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tokenspeech.asr.engine import Encoded
from tokenspeech.decoding.calls import Call
from tokenspeech.features import MelConfig
from tokenspeech.models.asr import AsrModel
from tokenspeech.models.asr_encoder import EncoderState
from tokenspeech.models.asr_heads import AttentionDecoder, ParallelDecoder
from tokenspeech.models.frontend import LogMel
from tokenspeech.models.transformer import LayerCache, attention_mask, empty_cache


def _from(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


class TorchAsrBackend:
    """:class:`tokenspeech.asr.engine.AsrBackend` over an :class:`AsrModel` and the PyTorch log-mel front-end."""

    def __init__(self, model: AsrModel, mel: MelConfig) -> None:
        self.model = model.eval()
        self.frontend = LogMel(mel)
        self.decoders = tuple(model.config.decoders)

    @torch.inference_mode()
    def features(self, wav: np.ndarray) -> np.ndarray:
        return self.frontend(_from(np.asarray(wav, dtype=np.float32))).numpy()

    def _encoded(self, hidden: Tensor, lengths: Tensor) -> Encoded:
        alphas = self.model.predictor(hidden).float().numpy() if self.model.predictor is not None else None
        return Encoded(hidden.float().numpy(), lengths.numpy().astype(np.int64),
                       self.model.ctc_log_probs(hidden).float().numpy(), alphas)

    @torch.inference_mode()
    def encode(self, mel: np.ndarray, mel_lengths: np.ndarray, chunk: int, left_chunks: int) -> Encoded:
        hidden, lengths = self.model.encode(_from(mel), _from(mel_lengths), chunk, left_chunks)
        return self._encoded(hidden, lengths)

    @torch.inference_mode()
    def paraformer(self, acoustic: np.ndarray, token_lengths: np.ndarray, hidden: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        logits = self.model.parallel_decoder(_from(acoustic), _from(token_lengths), _from(hidden), _from(lengths))
        return logits.float().numpy()

    def attention_step(self) -> TorchAttentionStep:
        return TorchAttentionStep(self.model.attention_decoder)

    def block_decoder(self) -> TorchBlockDecoder:
        return TorchBlockDecoder(self.model.parallel_decoder)

    def init_stream(self) -> EncoderState:
        return self.model.encoder.init_state(1)

    @torch.inference_mode()
    def encode_stream(self, mel: np.ndarray, state: EncoderState, chunk: int, left_chunks: int,
                      final: bool) -> tuple[Encoded, EncoderState]:
        frames, state = self.model.encoder.step(_from(mel), state, chunk, left_chunks, final=final)
        return self._encoded(frames, torch.tensor([frames.shape[1]])), state

    def batch_key(self, call: Call) -> Hashable | None:
        """``encode_stream`` calls of concurrent streams with the same chunking run as one batched pass."""
        if call.method != self.encode_stream:
            return None
        _, _, chunk, left_chunks, _ = call.args
        return self.model, "encode_stream", chunk, left_chunks

    @torch.inference_mode()
    def run_batch(self, calls: Sequence[Call]) -> list[tuple[Encoded, EncoderState]]:
        """Every stream's ``encode_stream``, chunks batched (:meth:`AsrEncoder.step_streams`)."""
        _, _, chunk, left_chunks, _ = calls[0].args
        stepped = self.model.encoder.step_streams([_from(call.args[0]) for call in calls],
                                                  [call.args[1] for call in calls], chunk, left_chunks,
                                                  [call.args[4] for call in calls])
        return [(self._encoded(frames, torch.tensor([frames.shape[1]])), state) for frames, state in stepped]


@dataclass
class AttentionState:
    """KV caches per layer ``[B, H, P, Dh]``, cross-attention keys/values ``[B, H, T, Dh]`` and memory mask."""

    caches: list[LayerCache]
    memory_kv: list[tuple[Tensor, Tensor]]
    memory_mask: Tensor  # [B, 1, 1, T]


class TorchAttentionStep:
    """StepModel over :class:`AttentionDecoder`; build the first state with :meth:`prepare`."""

    def __init__(self, decoder: AttentionDecoder) -> None:
        self.decoder = decoder

    @torch.inference_mode()
    def prepare(self, memory: Tensor | np.ndarray, memory_lengths: Tensor | np.ndarray) -> AttentionState:
        """State for ``memory [B, T, D]`` with valid lengths ``[B]`` (tensors or arrays) and nothing decoded yet."""
        memory, memory_lengths = torch.as_tensor(memory), torch.as_tensor(memory_lengths)
        config = self.decoder.transformer.config
        mask = attention_mask(memory_lengths, memory.shape[1], causal=False)[:, :, :1, :]
        return AttentionState(empty_cache(config, memory.shape[0], memory.device, memory.dtype),
                              self.decoder.transformer.memory_kv(memory), mask)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: AttentionState) -> tuple[np.ndarray, AttentionState]:
        logits, caches = self.decoder.step(torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)),
                                           state.caches, state.memory_kv, state.memory_mask)
        return logits.float().numpy(), AttentionState(caches, state.memory_kv, state.memory_mask)

    def select(self, state: AttentionState, rows: np.ndarray) -> AttentionState:
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return AttentionState([LayerCache(c.key[index], c.value[index]) for c in state.caches],
                              [(k[index], v[index]) for k, v in state.memory_kv], state.memory_mask[index])


@dataclass
class BlockState:
    """One stream: decoder KV cache of the label context and cross-attention memory keys/values."""

    caches: list[LayerCache]
    memory_kv: list[tuple[Tensor, Tensor]]


class TorchBlockDecoder:
    """BlockDecoderModel over :class:`ParallelDecoder` for one stream (batch 1)."""

    def __init__(self, decoder: ParallelDecoder) -> None:
        self.decoder = decoder

    def init_state(self) -> BlockState:
        config = self.decoder.transformer.config
        empty = empty_cache(config, 1, self.decoder.out.weight.device)
        return BlockState(empty, [(c.key, c.value) for c in empty])

    @torch.inference_mode()
    def add_memory(self, frames: np.ndarray, state: BlockState) -> BlockState:
        new = self.decoder.transformer.memory_kv(torch.from_numpy(np.asarray(frames, dtype=np.float32))[None])
        merged = [(torch.cat([k, nk], dim=2), torch.cat([v, nv], dim=2))
                  for (k, v), (nk, nv) in zip(state.memory_kv, new)]
        return BlockState(state.caches, merged)

    @torch.inference_mode()
    def decode_block(self, acoustic: np.ndarray, state: BlockState) -> np.ndarray:
        inputs = torch.from_numpy(np.asarray(acoustic, dtype=np.float32))[None]
        logits, _ = self.decoder.step(inputs, state.caches, state.memory_kv)
        return logits[0].float().numpy()

    @torch.inference_mode()
    def add_context(self, tokens: np.ndarray, state: BlockState) -> BlockState:
        inputs = self.decoder.embed(torch.from_numpy(np.asarray(tokens, dtype=np.int64))[None])
        _, caches = self.decoder.step(inputs, state.caches, state.memory_kv)
        return BlockState(caches, state.memory_kv)
