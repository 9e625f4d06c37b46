"""Inference precision of the PyTorch models: float32, or bfloat16 matrix products where the CPU has them.

``bf16`` swaps each large :class:`torch.nn.Linear` of a loaded model for a
:class:`Bf16Linear`: bfloat16 weights, the input rounded to bfloat16 on the
way in and the product (accumulated in float32 by oneDNN) returned as
float32. Everything else stays float32: layer norms, attention, embeddings,
convolutions and the codebook heads (their logits feed sampling), so the
KV buffers and the NumPy boundary do not change. On CPUs with native
bfloat16 dot products (AVX512-BF16 or AMX) a 256 -> 1024 product of 130
rows ran 2.2x faster, the TTS codec transformer over 12 x 16 frames 1.2-1.6x
and a codec decoder step of 10 streams 1.35x (session 23, docs/serving.md);
elsewhere oneDNN emulates them and they are slower, so ``auto`` picks
``bf16`` only where the CPU has them.

Why not ``torch.autocast``: it casts every weight again on each call (its
cache lives only inside one autocast region, and the server enters one per
batched pass), which costs more than it saves on the small passes of a
stream. Converting the weights once at load time does not.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenspeech.errors import ConfigError
from tokenspeech.precisions import PRECISIONS

logger = logging.getLogger(__name__)

MIN_LINEAR_PARAMETERS = 1024  # smaller products (e.g. a 2 -> 256 position layer) stay float32: nothing to gain


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CPU with native bfloat16, else ``fp32``; ``fp32`` and ``bf16`` as given."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision == "bf16" and not native_bf16():
        logger.warning("this CPU has no native bfloat16 dot products: bf16 runs emulated and slower than fp32")
    return precision


def bucketed_rows(rows: int) -> int:
    """The row count a bfloat16 product is padded to: a power of two up to 32, then a multiple of 32.

    oneDNN compiles a kernel for each new shape (about 0.3 ms on this
    project's CPUs) and caches a limited number of them. A server's passes
    come in ever new row counts (streams x frames, sentences x phonemes),
    so unpadded bf16 products compiled most of the time and ran slower than
    float32 (docs/serving.md, session 23); padded, each layer sees a few
    dozen shapes.
    """
    if rows <= 32:
        return 1 << max(0, rows - 1).bit_length()
    return -(-rows // 32) * 32


class Bf16Linear(nn.Module):
    """An inference-only :class:`nn.Linear` with bfloat16 weights that takes and returns float32.

    Rows are padded to :func:`bucketed_rows` for the product (and cut after),
    so the kernel's shape repeats across calls.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
        padded = bucketed_rows(rows)
        if padded != rows:
            flat = F.pad(flat, (0, 0, 0, padded - rows))
        y = F.linear(flat, self.weight, self.bias)[:rows]
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def bf16_linears(module: nn.Module, min_parameters: int = MIN_LINEAR_PARAMETERS) -> int:
    """Swap every :class:`nn.Linear` of ``module`` with at least ``min_parameters`` weights for a
    :class:`Bf16Linear`, in place; returns how many were swapped. For inference only (no gradients)."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and child.in_features * child.out_features >= min_parameters:
            setattr(module, name, Bf16Linear(child))
            swapped += 1
        else:
            swapped += bf16_linears(child, min_parameters)
    return swapped


def set_precision(module: nn.Module, precision: str) -> str:
    """Put ``module`` in a precision :func:`resolve_precision` gave (``fp32`` or ``bf16``); returns it.

    Resolve once, then set each model a loader returns: ``auto`` and the
    warning for emulated bf16 are settled (and said) once.
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"set_precision takes fp32 or bf16 (resolve {precision!r} first)")
    if precision == "bf16":
        count = bf16_linears(module)
        logger.info("%s: %d linear layers in bfloat16", type(module).__name__, count)
    return precision
