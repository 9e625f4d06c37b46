"""Multi-task ASR losses over one encoder pass: CTC, phoneme CTC, Paraformer (CIF + GLM), AR, semi-AR.

Axes: B batch, T encoder frames, N characters, D dim, V vocabulary.

* ``ctc`` / ``phoneme_ctc``: CTC (blank = id 0), summed and divided by the
  number of target symbols.
* ``quantity``: mean relative absolute difference between the summed CIF
  weights and the number of characters, ``|sum(alpha) - N| / N``. Relative,
  so each frame's gradient (``1 / N``) is on the scale of the per-token
  losses; an absolute L1 would out-weigh everything else by ~N.
* ``paraformer``: cross-entropy of the parallel decoder on CIF embeddings
  (weights rescaled to the true length), with the glancing LM sampler: a
  first pass without gradients counts each utterance's errors; in the second
  pass ``ceil(glm_ratio * errors)`` random positions get the target
  character's embedding instead of the acoustic one.
* ``semiar``: the same decoder with block-causal masks of the current
  encoder chunk size: tokens in blocks before a random boundary are label
  context (embeddings, no loss), tokens from the boundary on are acoustic
  and scored - what the streaming decoder sees.
* ``ar``: teacher-forced cross-entropy of the attention decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenspeech.models.asr import AsrModel
from tokenspeech.models.asr_heads import block_masks, cif_weights, fire_frames, scale_alphas
from tokenspeech.training.asr_data import AsrBatch


@dataclass(frozen=True)
class LossWeights:
    ctc: float = 0.5
    phoneme_ctc: float = 0.2
    paraformer: float = 1.0
    quantity: float = 2.0
    ar: float = 0.5
    semiar: float = 0.5
    label_smoothing: float = 0.1
    glm_ratio: float = 0.5


def _ctc(logits: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """CTC over a head's ``logits [B, T, V]``, normalised in float32 (under bf16 autocast the head gives bf16)."""
    log_probs = logits.float().log_softmax(dim=-1)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=0,
                      reduction="sum", zero_infinity=True)
    return loss / target_lengths.sum().clamp(min=1)


def _token_ce(logits: Tensor, targets: Tensor, valid: Tensor, smoothing: float) -> Tensor:
    """Mean cross-entropy over ``valid [B, N]`` positions."""
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), targets[valid], label_smoothing=smoothing)


def _valid(lengths: Tensor, size: int) -> Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _glancing_inputs(model: AsrModel, acoustic: Tensor, batch: AsrBatch, encoded: Tensor, lengths: Tensor,
                     ratio: float) -> Tensor:
    """Acoustic embeddings with ``ceil(ratio * errors)`` random positions replaced by target embeddings."""
    decoder = model.parallel_decoder
    valid = _valid(batch.char_lengths, acoustic.shape[1])
    with torch.no_grad():
        first = decoder(acoustic, batch.char_lengths, encoded, lengths).argmax(dim=-1)
    errors = ((first != batch.chars) & valid).sum(dim=1)
    count = torch.ceil(errors.float() * ratio).long()
    scores = torch.rand(valid.shape).masked_fill(~valid, -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    glance = (rank < count[:, None]) & valid
    return torch.where(glance[:, :, None], decoder.embed(batch.chars), acoustic)


def _semiar_loss(model: AsrModel, acoustic: Tensor, weights: Tensor, batch: AsrBatch, encoded: Tensor,
                 lengths: Tensor, chunk: int, smoothing: float) -> Tensor:
    fire = fire_frames(weights)  # [B, N]
    self_mask, memory_mask = block_masks(fire, batch.char_lengths, lengths, chunk, encoded.shape[1])
    block = torch.div(fire, chunk, rounding_mode="floor")
    valid = _valid(batch.char_lengths, acoustic.shape[1])
    last_block = torch.where(valid, block, torch.zeros_like(block)).amax(dim=1)
    boundary = (torch.rand(last_block.shape) * (last_block + 1).float()).long()  # uniform in [0, last]
    context = (block < boundary[:, None]) & valid
    inputs = torch.where(context[:, :, None], model.parallel_decoder.embed(batch.chars), acoustic)
    logits = model.parallel_decoder(inputs, batch.char_lengths, encoded, lengths, self_mask, memory_mask)
    return _token_ce(logits, batch.chars, valid & ~context, smoothing)


def _paraformer_losses(model: AsrModel, batch: AsrBatch, encoded: Tensor, lengths: Tensor, chunk: int,
                       w: LossWeights) -> dict[str, Tensor]:
    alphas = model.predictor(encoded).float()  # CIF sums them: float32 even under bf16 autocast
    valid_frames = _valid(lengths, encoded.shape[1]).to(alphas.dtype)
    targets = batch.char_lengths.float().clamp(min=1)
    losses = {"quantity": (((alphas * valid_frames).sum(1) - targets).abs() / targets).mean()}
    max_tokens = batch.chars.shape[1]
    weights = cif_weights(scale_alphas(alphas, lengths, batch.char_lengths), batch.char_lengths, max_tokens)
    acoustic = weights @ encoded  # [B, N, D]
    valid = _valid(batch.char_lengths, max_tokens)
    if "paraformer" in model.config.decoders:
        inputs = _glancing_inputs(model, acoustic, batch, encoded, lengths, w.glm_ratio) if w.glm_ratio > 0 \
            else acoustic
        logits = model.parallel_decoder(inputs, batch.char_lengths, encoded, lengths)
        losses["paraformer"] = _token_ce(logits, batch.chars, valid, w.label_smoothing)
    if "semiar" in model.config.decoders and chunk > 0:
        losses["semiar"] = _semiar_loss(model, acoustic, weights, batch, encoded, lengths, chunk,
                                        w.label_smoothing)
    return losses


def _ar_loss(model: AsrModel, batch: AsrBatch, encoded: Tensor, lengths: Tensor, smoothing: float,
             bos: int, eos: int) -> Tensor:
    chars, n = batch.chars, batch.char_lengths
    inputs = torch.cat([torch.full_like(chars[:, :1], bos), chars], dim=1)
    targets = torch.cat([chars, torch.zeros_like(chars[:, :1])], dim=1)
    targets[torch.arange(len(n)), n] = eos
    logits = model.attention_decoder(inputs, n + 1, encoded, lengths)
    return _token_ce(logits, targets, _valid(n + 1, inputs.shape[1]), smoothing)


def asr_losses(model: AsrModel, batch: AsrBatch, chunk: int, left_chunks: int, w: LossWeights,
               bos: int, eos: int, ctc_only: bool = False) -> dict[str, Tensor]:
    """Every enabled loss and their weighted ``total`` for one batch (encoder run once).

    ``ctc_only`` leaves the decoder heads out (encoder warm-up: see ``AsrTrainOptions.ctc_warmup_steps``).
    """
    encoded, lengths = model.encode(batch.mel, batch.mel_lengths, chunk, left_chunks)
    lengths = lengths.clamp(min=1)
    losses = {"ctc": _ctc(model.ctc(encoded), lengths, batch.chars, batch.char_lengths)}
    if model.phoneme_ctc is not None and batch.phonemes is not None:
        losses["phoneme_ctc"] = _ctc(model.phoneme_ctc(encoded), lengths, batch.phonemes, batch.phoneme_lengths)
    if model.parallel_decoder is not None and not ctc_only:
        losses.update(_paraformer_losses(model, batch, encoded, lengths, chunk, w))
    if model.attention_decoder is not None and not ctc_only:
        losses["ar"] = _ar_loss(model, batch, encoded, lengths, w.label_smoothing, bos, eos)
    total = sum(getattr(w, name) * value for name, value in losses.items())
    losses["total"] = total
    if not math.isfinite(float(total.detach())):
        raise FloatingPointError(f"non-finite loss: { {k: float(v) for k, v in losses.items()} }")
    return losses
