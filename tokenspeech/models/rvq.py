"""Residual vector quantizer of tscodec: EMA codebooks, k-means initialisation, dead-code replacement."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class QuantizerOutput:
    """Result of a training/analysis pass of :class:`ResidualVectorQuantizer`."""

    quantized: Tensor  # [B, F, D] straight-through sum of each item's active codebooks
    codes: Tensor  # [B, K, F] int64, all K stages (inactive ones included)
    commitment: Tensor  # scalar: mean squared distance of residuals to their codewords (active stages)
    perplexity: Tensor  # [K] exp(entropy) of each stage's code histogram in this batch
    replaced: int  # dead codes replaced in this pass


def kmeans(vectors: Tensor, clusters: int, iterations: int) -> Tensor:
    """Lloyd's k-means ``[N, D] -> centroids [clusters, D]``; seeds are random samples (plus jitter).

    Fewer vectors than clusters is allowed: seeds are then drawn with
    replacement and jittered, and clusters left empty keep their seed.
    """
    count = vectors.shape[0]
    picks = torch.randperm(count)[:clusters] if count >= clusters else torch.randint(count, (clusters,))
    centroids = vectors[picks].clone()
    jitter = 1e-3 * vectors.std().clamp_min(1e-8)
    centroids += jitter * torch.randn_like(centroids)
    for _ in range(iterations):
        assign = _nearest(vectors, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        sizes = torch.bincount(assign, minlength=clusters).to(vectors.dtype)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    return centroids


def _nearest(vectors: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codeword: ``vectors [..., D]``, ``codebook [V, D] -> [...]`` int64."""
    distance = (codebook * codebook).sum(-1) - 2 * torch.matmul(vectors, codebook.t())
    return distance.argmin(dim=-1)


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ with ``K`` EMA codebooks of ``V`` codewords of dim ``D``.

    Training (``forward`` in train mode): codebooks are initialised by k-means
    on the first batch's latents (stage by stage, on the residuals), then
    follow exponential moving averages of their assigned vectors. A codeword
    not chosen while its codebook quantised ``dead_code_patience * V``
    vectors (a uniformly used one would have been chosen that many times) is
    replaced by a random residual from the current batch. Each batch item uses
    its own number of codebooks (quantizer dropout); EMA statistics only count
    the stages an item uses.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float = 0.99,
                 dead_code_patience: float = 8.0, kmeans_iterations: int = 10) -> None:
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.dead_code_patience = dead_code_patience
        self.kmeans_iterations = kmeans_iterations
        self.register_buffer("codebooks", torch.zeros(num_codebooks, codebook_size, dim))
        self.register_buffer("cluster_size", torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("embed_sum", torch.zeros(num_codebooks, codebook_size, dim))
        # Vectors this codebook quantised since each codeword was last chosen.
        self.register_buffer("idle", torch.zeros(num_codebooks, codebook_size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def encode(self, latent: Tensor, num_codebooks: int | None = None) -> Tensor:
        """``latent [B, F, D] -> codes [B, n, F]`` int64, greedy residual search over the first ``n``."""
        n = self.num_codebooks if num_codebooks is None else num_codebooks
        if not 1 <= n <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be in 1..{self.num_codebooks}, got {n}")
        residual = latent
        codes = []
        for k in range(n):
            index = _nearest(residual, self.codebooks[k])  # [B, F]
            residual = residual - F.embedding(index, self.codebooks[k])
            codes.append(index)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, k, F]`` (any ``k <= K``) ``-> latent [B, F, D]``: sum of the codewords.

        One gather from the flattened ``[K V, D]`` table, so ``k`` stays a
        dynamic axis in an ONNX export.
        """
        offsets = torch.arange(codes.shape[1], device=codes.device) * self.codebook_size
        table = self.codebooks.reshape(-1, self.dim)
        return F.embedding(codes + offsets[None, :, None], table).sum(dim=1)

    def forward(self, latent: Tensor, active: Tensor) -> QuantizerOutput:
        """``latent [B, F, D]``, ``active [B]`` codebooks per item (1..K) -> :class:`QuantizerOutput`."""
        if self.training and not bool(self.initialized):
            self._initialise(latent.detach())
        _, frames, dim = latent.shape
        use = (torch.arange(self.num_codebooks, device=latent.device)[None, :] < active[:, None]).to(latent.dtype)
        residual = latent.detach()
        total = torch.zeros_like(residual)
        commitment = latent.new_zeros(())
        codes, perplexity, replaced = [], [], 0
        for k in range(self.num_codebooks):
            index = _nearest(residual, self.codebooks[k])  # [B, F]
            chosen = F.embedding(index, self.codebooks[k])
            weight = use[:, k, None, None]  # [B, 1, 1]
            live = latent - total  # grad flows to the encoder; earlier codewords are constants
            commitment = commitment + ((live - chosen).pow(2) * weight).sum() / (use.sum() * frames * dim)
            if self.training:
                replaced += self._update(k, residual, index, weight)
            perplexity.append(_perplexity(index, weight, self.codebook_size))
            total = total + chosen * weight
            residual = residual - chosen
            codes.append(index)
        quantized = latent + (total - latent).detach()
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), commitment, torch.stack(perplexity), replaced)

    @torch.no_grad()
    def _initialise(self, latent: Tensor) -> None:
        vectors = latent.reshape(-1, self.dim)
        share = vectors.shape[0] / self.codebook_size
        for k in range(self.num_codebooks):
            centroids = kmeans(vectors, self.codebook_size, self.kmeans_iterations)
            self.codebooks[k] = centroids
            self.cluster_size[k] = share
            self.embed_sum[k] = centroids * share
            vectors = vectors - centroids[_nearest(vectors, centroids)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, k: int, residual: Tensor, index: Tensor, weight: Tensor) -> int:
        """EMA step of codebook ``k`` on the items that use it; returns the dead codes replaced."""
        mask = weight.expand(-1, residual.shape[1], 1).reshape(-1) > 0  # [B F]
        vectors = residual.reshape(-1, self.dim)[mask]
        if vectors.shape[0] == 0:
            return 0
        assigned = index.reshape(-1)[mask]
        counts = torch.bincount(assigned, minlength=self.codebook_size).to(vectors.dtype)
        sums = torch.zeros_like(self.embed_sum[k]).index_add_(0, assigned, vectors)
        self.cluster_size[k].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum[k].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        size = self.cluster_size[k]
        total = size.sum()
        smoothed = (size + 1e-5) / (total + self.codebook_size * 1e-5) * total
        self.codebooks[k] = self.embed_sum[k] / smoothed[:, None]
        self.idle[k] = torch.where(counts > 0, 0.0, self.idle[k] + vectors.shape[0])
        return self._replace_dead(k, vectors)

    def _replace_dead(self, k: int, vectors: Tensor) -> int:
        dead = self.idle[k] >= self.dead_code_patience * self.codebook_size
        count = int(dead.sum())
        if count:
            share = vectors.shape[0] / self.codebook_size
            samples = vectors[torch.randint(vectors.shape[0], (count,), device=vectors.device)]
            self.codebooks[k][dead] = samples
            self.cluster_size[k][dead] = share
            self.embed_sum[k][dead] = samples * share
            self.idle[k][dead] = 0.0
        return count

    def usage(self, within: float = 4.0) -> Tensor:
        """``[K]`` fraction of codewords chosen within the last ``within * V`` vectors (uniform use: 98 %)."""
        return (self.idle < within * self.codebook_size).float().mean(dim=1)


def _perplexity(index: Tensor, weight: Tensor, size: int) -> Tensor:
    counts = torch.zeros(size, dtype=weight.dtype, device=index.device)
    counts.index_add_(0, index.reshape(-1), weight.expand_as(index[..., None]).reshape(-1))
    probs = counts / counts.sum().clamp_min(1e-8)
    return torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
