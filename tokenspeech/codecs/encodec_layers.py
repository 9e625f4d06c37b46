"""Streaming twins of EnCodec's SEANet layers, and its residual codebooks (see :mod:`tokenspeech.codecs.encodec`).

Each layer runs ``forward(x [B, C, L], state, started [B]) -> (y, state)``
over whole frames with its history as a flat tuple of tensors, so offline
and chunked processing are the same computation, in PyTorch and in ONNX.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tokenspeech.errors import ModelLoadError


class _StreamLayer(nn.Module):
    """One layer of a streaming SEANet: ``forward(x [B, C, L], state, started [B]) -> (y, state)``.

    ``stride`` (> 1: downsampling) or ``upsample`` says how the time axis
    changes; ``first_chunk_min_steps`` is the input length the first chunk
    needs for its start padding to equal the offline one (0: no requirement).
    """

    num_state: int = 0
    stride: int = 1
    upsample: int = 1
    first_chunk_min_steps: int = 0

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return ()


class _Stateless(_StreamLayer):
    """A pointwise module (activation) that needs no state."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.module(x), ()


class _CausalConv(_StreamLayer):
    """A causal convolution that keeps its last ``context`` input steps as state.

    At a stream's start the left context is the input mirrored around its
    first sample (EnCodec's reflect padding) instead of the history.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.padding != (0,) or conv.groups != 1:
            raise ModelLoadError("unexpected EnCodec convolution layout (padding or groups)")
        self.conv = conv
        (kernel,), (self.stride,), (dilation,) = conv.kernel_size, conv.stride, conv.dilation
        self.context = (kernel - 1) * dilation - (self.stride - 1)
        self.num_state = 1 if self.context > 0 else 0
        self.first_chunk_min_steps = self.context + 1 if self.context > 0 else 0
        self.register_buffer("mirror", torch.arange(self.context, 0, -1), persistent=False)

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        if not self.num_state:
            return ()
        return (self.conv.weight.new_zeros(batch_size, self.conv.in_channels, self.context),)

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        if not self.num_state:
            return self.conv(x), ()
        (history,) = state
        source = x if x.shape[-1] > self.context else F.pad(x, (0, self.context + 1 - x.shape[-1]))
        left = torch.where(started.view(-1, 1, 1), history, source[..., self.mirror])
        padded = torch.cat([left, x], dim=-1)
        return self.conv(padded), (padded[..., padded.shape[-1] - self.context:],)


class _CausalConvTranspose(_StreamLayer):
    """A transposed convolution whose overlapping output tail is carried to the next chunk.

    EnCodec's causal version drops the last ``kernel - stride`` outputs; here
    they are kept (without bias) and added to the next chunk's first outputs.
    """

    num_state = 1

    def __init__(self, convtr: nn.ConvTranspose1d) -> None:
        super().__init__()
        if convtr.padding != (0,) or convtr.output_padding != (0,) or convtr.dilation != (1,):
            raise ModelLoadError("unexpected EnCodec transposed convolution layout")
        self.convtr = convtr
        (kernel,), (self.upsample,) = convtr.kernel_size, convtr.stride
        self.overlap = kernel - self.upsample
        if not 0 <= self.overlap <= self.upsample:
            raise ModelLoadError("EnCodec transposed convolutions must have stride <= kernel <= 2 * stride")

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return (self.convtr.weight.new_zeros(batch_size, self.convtr.out_channels, self.overlap),)

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        (tail,) = state
        tail = torch.where(started.view(-1, 1, 1), tail, torch.zeros_like(tail))
        y = F.conv_transpose1d(x, self.convtr.weight, None, stride=self.upsample)
        length = x.shape[-1] * self.upsample
        head = y[..., : self.overlap] + tail
        body = torch.cat([head, y[..., self.overlap:length]], dim=-1)
        return body + self.convtr.bias.view(1, -1, 1), (y[..., length:],)


class _LSTM(_StreamLayer):
    """EnCodec's skip-connected LSTM over ``[B, C, L]`` with ``(h, c)`` ``[layers, B, C]`` as state.

    Chunks of up to ``UNROLL_MAX_STEPS`` steps run through a plain step loop:
    oneDNN's LSTM spends ~14 ms per call reordering weights, which would
    dominate frame-by-frame streaming. Longer chunks and ONNX export use ``nn.LSTM``.
    """

    num_state = 2
    UNROLL_MAX_STEPS = 32

    def __init__(self, lstm: nn.LSTM, skip: bool) -> None:
        super().__init__()
        if lstm.batch_first or lstm.bidirectional or lstm.proj_size or not lstm.bias:
            raise ModelLoadError("unexpected EnCodec LSTM layout")
        self.lstm, self.skip = lstm, skip

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        zeros = self.lstm.weight_ih_l0.new_zeros(self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        keep = started.view(1, -1, 1)
        h, c = (torch.where(keep, s, torch.zeros_like(s)) for s in state)
        seq = x.permute(2, 0, 1)  # [L, B, C]
        if seq.shape[0] <= self.UNROLL_MAX_STEPS and not torch.onnx.is_in_onnx_export():
            y, h, c = self._unrolled(seq, h, c)
        else:
            y, (h, c) = self.lstm(seq, (h, c))
        if self.skip:
            y = y + seq
        return y.permute(1, 2, 0), (h, c)

    def _unrolled(self, seq: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The LSTM equations step by step: ``seq [L, B, C]``, ``h, c [layers, B, C]``."""
        steps, batch, _ = seq.shape
        new_h, new_c = [], []
        for layer in range(self.lstm.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(self.lstm, f"{name}_l{layer}")
                                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            inputs = torch.addmm(b_ih + b_hh, seq.reshape(steps * batch, -1), w_ih.t()).view(steps, batch, -1)
            h_t, c_t, outputs = h[layer], c[layer], []
            for t in range(steps):
                i, f, g, o = torch.addmm(inputs[t], h_t, w_hh.t()).chunk(4, dim=1)
                c_t = torch.sigmoid(f) * c_t + torch.sigmoid(i) * torch.tanh(g)
                h_t = torch.sigmoid(o) * torch.tanh(c_t)
                outputs.append(h_t)
            seq = torch.stack(outputs)
            new_h.append(h_t)
            new_c.append(c_t)
        return seq, torch.stack(new_h), torch.stack(new_c)


class _ResBlock(_StreamLayer):
    """SEANet residual block: ``shortcut(x) + block(x)``, both streaming."""

    def __init__(self, block: list[_StreamLayer], shortcut: list[_StreamLayer]) -> None:
        super().__init__()
        self.block, self.shortcut = _Chain(block), _Chain(shortcut)
        self.num_state = self.block.num_state + self.shortcut.num_state
        self.first_chunk_min_steps = max(self.block.first_chunk_min_steps, self.shortcut.first_chunk_min_steps)

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return self.block.init_state(batch_size) + self.shortcut.init_state(batch_size)

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        y, block_state = self.block(x, state[: self.block.num_state], started)
        skip, skip_state = self.shortcut(x, state[self.block.num_state:], started)
        return skip + y, block_state + skip_state


class _Chain(_StreamLayer):
    """Layers in sequence; the state is the concatenation of theirs."""

    def __init__(self, layers: list[_StreamLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_state = sum(layer.num_state for layer in layers)
        self.first_chunk_min_steps = max([layer.first_chunk_min_steps for layer in layers], default=0)

    def init_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return tuple(t for layer in self.layers for t in layer.init_state(batch_size))

    def forward(self, x: Tensor, state: tuple[Tensor, ...], started: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        new_state: tuple[Tensor, ...] = ()
        offset = 0
        for layer in self.layers:
            x, layer_state = layer(x, state[offset:offset + layer.num_state], started)
            offset += layer.num_state
            new_state += layer_state
        return x, new_state


def _stream_layer(module: nn.Module) -> _StreamLayer | None:
    """The streaming twin of one SEANet module (``None`` for identities)."""
    from encodec.modules import SLSTM, SConv1d, SConvTranspose1d
    from encodec.modules.seanet import SEANetResnetBlock

    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, SConv1d):
        if not module.causal or not isinstance(module.conv.norm, nn.Identity) or module.pad_mode != "reflect":
            raise ModelLoadError("only the causal, weight-normalised 24 kHz EnCodec can stream")
        return _CausalConv(module.conv.conv)
    if isinstance(module, SConvTranspose1d):
        if not module.causal or module.trim_right_ratio != 1.0 or not isinstance(module.convtr.norm, nn.Identity):
            raise ModelLoadError("only the causal, weight-normalised 24 kHz EnCodec can stream")
        return _CausalConvTranspose(module.convtr.convtr)
    if isinstance(module, SLSTM):
        return _LSTM(module.lstm, module.skip)
    if isinstance(module, SEANetResnetBlock):
        return _ResBlock(_stream_layers(module.block), _stream_layers([module.shortcut]))
    if isinstance(module, (nn.ELU, nn.ReLU, nn.LeakyReLU, nn.Tanh)):
        return _Stateless(module)
    raise ModelLoadError(f"EnCodec layer {type(module).__name__} has no streaming version")


def _stream_layers(modules: Any) -> list[_StreamLayer]:
    return [layer for layer in map(_stream_layer, modules) if layer is not None]


class StreamingSeanet(_Chain):
    """A SEANet encoder or decoder as one streaming step over whole frames.

    ``forward(x [B, C_in, L_in], state, started [B] bool) -> (y [B, C_out, L_out], state)``
    where ``L`` is ``frames * steps_per_frame`` on each side. ``state`` is a
    flat tuple of tensors in layer order (see :meth:`init_state`).
    """

    def __init__(self, seanet: nn.Module, steps_per_frame_in: int) -> None:
        super().__init__(_stream_layers(seanet.model))
        self.steps_per_frame_in = steps_per_frame_in
        self.min_exact_first_frames = self._min_first_frames(steps_per_frame_in)

    def _min_first_frames(self, steps_per_frame: int) -> int:
        needed, rate = 1, float(steps_per_frame)
        for layer in self._leaves():
            if layer.first_chunk_min_steps:
                needed = max(needed, math.ceil(layer.first_chunk_min_steps / rate))
            rate = rate / layer.stride * layer.upsample
        return needed

    def _leaves(self) -> list[_StreamLayer]:
        return [m for m in self.modules() if isinstance(m, _StreamLayer) and not isinstance(m, (_Chain, _ResBlock))]


class ResidualCodebooks(nn.Module):
    """Residual vector quantisation with fixed codebooks ``[K_max, N, D]``."""

    def __init__(self, codebooks: Tensor) -> None:
        super().__init__()
        self.register_buffer("codebooks", codebooks.detach().clone())
        self.register_buffer("sq_norms", codebooks.detach().pow(2).sum(-1))

    def encode(self, latent: Tensor, codebooks: int) -> Tensor:
        """``latent [B, D, F]`` -> codes ``[B, K, F]`` int64 (nearest entry, residual by residual)."""
        B, D, frames = latent.shape
        residual = latent.transpose(1, 2).reshape(B * frames, D)
        codes = []
        for k in range(codebooks):
            table = self.codebooks[k]
            distance = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ table.t() + self.sq_norms[k]
            index = distance.argmin(dim=-1)
            residual = residual - F.embedding(index, table)
            codes.append(index.view(B, frames))
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes ``[B, K, F]`` -> latent ``[B, D, F]``: the sum of the K chosen entries."""
        K_max, N, D = self.codebooks.shape
        offsets = torch.arange(codes.shape[1], device=codes.device).view(1, -1, 1) * N
        vectors = F.embedding(codes + offsets, self.codebooks.reshape(K_max * N, D))  # [B, K, F, D]
        return vectors.sum(dim=1).transpose(1, 2)
