"""Meta's EnCodec (24 kHz, causal) as an :class:`~tokenspeech.codecs.base.AudioTokenizer`.

The network and its weights come from the ``encodec`` package; this module
runs them through its own streaming layers
(:mod:`tokenspeech.codecs.encodec_layers`) so that offline and chunked
processing are the same computation:

- audio is mono 24 kHz float ``[B, 1, T]``; resample other rates first with
  :func:`tokenspeech.audio.resample`. ``encode`` zero-pads ``T`` up to whole
  frames (``hop_length`` = 320 samples), so ``F = ceil(T / 320)`` at 75 Hz;
- codes are ``[B, K, F]`` int64 in ``[0, 1024)``; ``K`` codebooks give
  ``K * 0.75`` kbps. EnCodec was trained for 1.5/3/6/12/24 kbps
  (K = 2/4/8/16/32, :data:`ENCODEC_BANDWIDTHS`); other ``K`` work because the
  quantizer is residual, but were not training targets;
- ``decode`` returns ``[B, 1, F * 320]``: whole frames, trim to the original
  length yourself.

Streaming. The 24 kHz model is causal except at the very start of a stream:
every convolution pads its left edge by mirroring the first samples of its
input (reflect padding), which peeks up to 6 frames ahead in the deepest
layers. A stream therefore reproduces the offline computation when its
first chunk holds at least :attr:`EncodecTokenizer.min_exact_first_frames`
frames (7); later chunks may be any whole number of frames, down to one.
"Reproduces" means up to float rounding (kernels differ with the chunk
length): measured on the random test model, encoder latents within 1.2e-7
(of a 0.09 peak) and decoded audio within 1e-7. Codes are nearest
codebook entries, so where two entries are tied to within that rounding a
code can flip (2 of 180 frames in the test; the tests check every flip is
such a tie). A shorter first chunk is accepted too: the mirror is then
taken from the chunk zero-extended, as EnCodec itself does for short
inputs, and the start differs from offline: with 1-frame chunks from the
start, decoded audio differs by up to 1.1e-4 in the first 8 frames and by
< 3e-6 afterwards (the LSTM forgets it); encoder latents differ for the
first 7 frames and agree within 2e-6 after 20.

Every step reads all weights of its half of the model (~30 MB), so on a CPU
frame-by-frame decoding is bound by memory traffic; steps of a few frames
amortise it.

State (:class:`EncodecStreamState`) is a flat tuple of tensors plus a
per-item ``started`` flag, so the same step runs in PyTorch and as an ONNX
graph (:mod:`tokenspeech.export.encodec`); setting ``started[b] = False``
restarts stream ``b``.

Weights (:func:`load_encodec`) never download: an explicit path, then
``$TOKENSPEECH_ENCODEC_WEIGHTS``, then the torch hub cache file the
``encodec`` package itself would have downloaded.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tokenspeech.codecs.base import CodecInfo
from tokenspeech.codecs.encodec_layers import ResidualCodebooks, StreamingSeanet
from tokenspeech.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from encodec import EncodecModel

LOG = logging.getLogger(__name__)

WEIGHTS_ENV = "TOKENSPEECH_ENCODEC_WEIGHTS"
CHECKPOINT_NAME = "encodec_24khz-d7cc33bc.th"
ENCODEC_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)
ENCODEC_24KHZ_INFO = CodecInfo(name="encodec_24khz", version="24khz", sample_rate=24000, frame_rate=75.0,
                               num_codebooks=32, codebook_size=1024)
_FETCH_COMMAND = "python -c 'from encodec import EncodecModel; EncodecModel.encodec_model_24khz()'"


def hub_checkpoint_path() -> Path:
    """Where the ``encodec`` package caches its 24 kHz checkpoint (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME


def find_encodec_weights(weights: Path | None = None) -> Path:
    """The weights file to use: ``weights`` > ``$TOKENSPEECH_ENCODEC_WEIGHTS`` > the hub cache file.

    Raises :class:`ModelLoadError` naming the missing file and how to get it.
    """
    how = (f"On a machine with internet access run {_FETCH_COMMAND}, copy the file it leaves at "
           f"<torch hub dir>/checkpoints/{CHECKPOINT_NAME} to {hub_checkpoint_path()}, or set "
           f"{WEIGHTS_ENV} (or pass --weights) to its path.")
    if weights is not None:
        if not Path(weights).is_file():
            raise ModelLoadError(f"EnCodec weights {weights} not found. {how}")
        return Path(weights)
    from_env = os.environ.get(WEIGHTS_ENV)
    if from_env:
        if not Path(from_env).is_file():
            raise ModelLoadError(f"EnCodec weights {from_env} (from ${WEIGHTS_ENV}) not found. {how}")
        return Path(from_env)
    cached = hub_checkpoint_path()
    if not cached.is_file():
        raise ModelLoadError(f"EnCodec 24 kHz weights not found: {cached} does not exist and {WEIGHTS_ENV} is "
                             f"not set (tokenspeech never downloads). {how}")
    return cached


def load_encodec(weights: Path | None = None) -> EncodecTokenizer:
    """Load the 24 kHz EnCodec from a state dict file (``.th``/``.pt``), never downloading.

    See :func:`find_encodec_weights` for the search order. Raises
    :class:`ModelLoadError` when no file is found or it does not hold an
    EnCodec 24 kHz state dict.
    """
    path = find_encodec_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file (pickle, zip, EOF)
        raise ModelLoadError(f"{path}: not a readable PyTorch state dict ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors (EncodecModel.state_dict())")
    model = _build_model()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[:3]
        raise ModelLoadError(f"{path}: not an EnCodec 24 kHz state dict ({' '.join(first)[:400]})") from None
    LOG.debug("loaded EnCodec weights from %s", path)
    return EncodecTokenizer(model)


def _build_model(seed: int = 0) -> EncodecModel:
    """The untrained 24 kHz EnCodec architecture, initialised from ``seed`` (global RNG untouched)."""
    try:
        from encodec import EncodecModel
    except ImportError as error:
        raise ModelLoadError(f"EnCodec needs the encodec and torchaudio packages ({error}); "
                             f"pip install encodec==0.1.1 torchaudio") from error
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        torch.manual_seed(seed)
        return EncodecModel.encodec_model_24khz(pretrained=False)


@dataclass(frozen=True)
class EncodecStreamState:
    """Streaming state of one direction (encode or decode) for a batch of ``B`` streams.

    ``started [B]`` bool is False until a stream's first chunk went through;
    ``buffers`` holds, in layer order, each convolution's last input steps
    ``[B, C, context]``, each transposed convolution's pending output tail
    ``[B, C, overlap]`` and the LSTM's ``h`` and ``c`` ``[layers, B, C]``.
    """

    started: Tensor
    buffers: tuple[Tensor, ...]

    @property
    def batch_size(self) -> int:
        return int(self.started.shape[0])


class EncodecTokenizer:
    """EnCodec 24 kHz behind the AudioTokenizer protocol (PyTorch backend, torch tensors in and out).

    Build with :func:`load_encodec` (pretrained weights) or
    :meth:`EncodecTokenizer.random` (tests). The wrapped model's weight
    normalisation is folded into plain weights; the model must not be changed
    afterwards (the streaming layers share its weights, the quantizer copies
    its codebooks).
    """

    info: CodecInfo = ENCODEC_24KHZ_INFO

    def __init__(self, model: EncodecModel) -> None:
        if model.sample_rate != self.info.sample_rate or model.channels != 1 or model.normalize:
            raise ModelLoadError("EncodecTokenizer wraps the mono 24 kHz EnCodec only")
        _fold_weight_norm(model)
        model.eval()
        self.model = model
        hop = self.info.hop_length
        self.encoder = StreamingSeanet(model.encoder, steps_per_frame_in=hop).eval()
        self.decoder = StreamingSeanet(model.decoder, steps_per_frame_in=1).eval()
        codebooks = torch.stack([layer._codebook.embed for layer in model.quantizer.vq.layers])
        self.quantizer = ResidualCodebooks(codebooks).eval()

    @classmethod
    def random(cls, seed: int = 0) -> EncodecTokenizer:
        """An untrained EnCodec whose codebooks are drawn from its own encoder outputs.

        The encoder sees 6 s of a synthetic speech-like signal; each codebook
        is a jittered sample of the residuals left by the codebooks before it,
        so every codebook is used. Deterministic for a given ``seed``; leaves
        the global RNG untouched. Takes about a second on one thread.
        """
        model = _build_model(seed)
        _fold_weight_norm(model)
        generator = torch.Generator().manual_seed(seed)
        signal = torch.from_numpy(_speechlike(4, 1.5, ENCODEC_24KHZ_INFO.sample_rate, seed))
        with torch.no_grad():
            latent = model.encoder(signal.unsqueeze(1))  # [4, D, F]
        _init_codebooks(model, latent.transpose(1, 2).reshape(-1, latent.shape[1]), generator)
        return cls(model)

    @property
    def min_exact_first_frames(self) -> int:
        """Frames the first chunk of a stream needs for streaming to equal offline processing."""
        return max(self.encoder.min_exact_first_frames, self.decoder.min_exact_first_frames)

    def _codebooks(self, codebooks: int | None) -> int:
        k = self.info.num_codebooks if codebooks is None else int(codebooks)
        if not 1 <= k <= self.info.num_codebooks:
            raise ConfigError(f"{self.info.name} has 1..{self.info.num_codebooks} codebooks, asked for {k}")
        return k

    def encode(self, wav: Tensor | np.ndarray, codebooks: int | None = None) -> Tensor:
        """``wav [B, 1, T]`` float at 24 kHz -> codes ``[B, K, ceil(T / 320)]`` int64.

        ``codebooks=None`` uses all 32 (24 kbps). The input is zero-padded to
        whole frames and processed in one step; for long audio call
        :meth:`encode_step` on chunks of >= 7 frames instead (same result,
        bounded memory).
        """
        wav = _as_wav(wav)
        pad = -wav.shape[-1] % self.info.hop_length
        codes, _ = self.encode_step(F.pad(wav, (0, pad)), self.init_encode_state(wav.shape[0]), codebooks)
        return codes

    def decode(self, codes: Tensor | np.ndarray) -> Tensor:
        """codes ``[B, K, F]`` -> ``wav [B, 1, F * 320]`` float32 at 24 kHz."""
        wav, _ = self.decode_step(codes, self.init_decode_state(_as_codes(codes, self.info).shape[0]))
        return wav

    def init_encode_state(self, batch_size: int) -> EncodecStreamState:
        return EncodecStreamState(torch.zeros(batch_size, dtype=torch.bool), self.encoder.init_state(batch_size))

    def init_decode_state(self, batch_size: int) -> EncodecStreamState:
        return EncodecStreamState(torch.zeros(batch_size, dtype=torch.bool), self.decoder.init_state(batch_size))

    def encode_step(self, wav: Tensor | np.ndarray, state: EncodecStreamState,
                    codebooks: int | None = None) -> tuple[Tensor, EncodecStreamState]:
        """One chunk ``wav [B, 1, L]`` (``L`` a multiple of 320) -> codes ``[B, K, L / 320]`` and the new state."""
        wav, k = _as_wav(wav), self._codebooks(codebooks)
        if wav.shape[-1] % self.info.hop_length:
            raise ConfigError(f"encode_step takes whole frames: {wav.shape[-1]} samples is not a multiple of "
                              f"{self.info.hop_length}")
        _check_batch(state, wav.shape[0])
        if wav.shape[-1] == 0:
            return torch.zeros(wav.shape[0], k, 0, dtype=torch.long), state
        with torch.no_grad():
            latent, buffers = self.encoder(wav, state.buffers, state.started)
            codes = self.quantizer.encode(latent, k)
        return codes, EncodecStreamState(torch.ones_like(state.started), buffers)

    def decode_step(self, codes: Tensor | np.ndarray,
                    state: EncodecStreamState) -> tuple[Tensor, EncodecStreamState]:
        """One chunk of codes ``[B, K, L]`` -> ``wav [B, 1, L * 320]`` and the new state."""
        codes = _as_codes(codes, self.info)
        _check_batch(state, codes.shape[0])
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0), state
        with torch.no_grad():
            wav, buffers = self.decoder(self.quantizer.decode(codes), state.buffers, state.started)
        return wav, EncodecStreamState(torch.ones_like(state.started), buffers)

    def encodec_state_dict(self) -> dict[str, Tensor]:
        """The weights as an ``encodec`` state dict (weight-normalised keys), loadable by :func:`load_encodec`.

        Each folded weight ``w`` is stored as ``weight_v = w`` and
        ``weight_g = |w|``, which folds back to exactly ``w``.
        """
        state = dict(self.model.state_dict())
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                weight = state.pop(f"{name}.weight")
                state[f"{name}.weight_g"] = torch.norm_except_dim(weight, 2, 0)
                state[f"{name}.weight_v"] = weight
        return state

    def save_weights(self, path: str | Path) -> None:
        """Write :meth:`encodec_state_dict` to ``path`` (a ``.th``/``.pt`` file)."""
        torch.save(self.encodec_state_dict(), Path(path))


def _fold_weight_norm(model: nn.Module) -> None:
    """Replace weight-norm reparametrisation by plain weights (faster steps, simpler ONNX graphs).

    ``w = v * (g / |v|)`` with the same norm function :meth:`EncodecTokenizer.encodec_state_dict`
    uses, so saving and loading reproduce the weights bit for bit.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and hasattr(module, "weight_g"):
            g, v = module.weight_g.detach(), module.weight_v.detach()
            nn.utils.remove_weight_norm(module)
            with torch.no_grad():
                module.weight.copy_(v * (g / torch.norm_except_dim(v, 2, 0)))


def _as_wav(wav: Tensor | np.ndarray) -> Tensor:
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ConfigError(f"EnCodec takes mono audio [B, 1, T], got shape {list(wav.shape)}")
    return wav


def _as_codes(codes: Tensor | np.ndarray, info: CodecInfo) -> Tensor:
    codes = torch.as_tensor(codes)
    if codes.dim() != 3 or codes.dtype.is_floating_point:
        raise ConfigError(f"codes must be integers [B, K, F], got {codes.dtype} {list(codes.shape)}")
    if not 1 <= codes.shape[1] <= info.num_codebooks:
        raise ConfigError(f"{info.name} has 1..{info.num_codebooks} codebooks, codes have {codes.shape[1]}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= info.codebook_size):
        raise ConfigError(f"codes must lie in [0, {info.codebook_size})")
    return codes.long()


def _check_batch(state: EncodecStreamState, batch_size: int) -> None:
    if state.batch_size != batch_size:
        raise ConfigError(f"the stream state holds {state.batch_size} streams, the chunk has {batch_size}")


def _init_codebooks(model: EncodecModel, latents: Tensor, generator: torch.Generator) -> None:
    """Fill every codebook with jittered residuals of ``latents [N, D]`` (a cheap stand-in for k-means)."""
    residual = latents.detach().clone()
    for layer in model.quantizer.vq.layers:
        book = layer._codebook
        size = book.embed.shape[0]
        picks = torch.randint(0, residual.shape[0], (size,), generator=generator)
        spread = residual.std(dim=0, keepdim=True)
        table = residual[picks] + 0.5 * spread * torch.randn(size, residual.shape[1], generator=generator)
        nearest = torch.cdist(residual, table).argmin(dim=1)
        residual = residual - table[nearest]
        book.embed.copy_(table)
        book.embed_avg.copy_(table)
        book.cluster_size.copy_(torch.bincount(nearest, minlength=size).float())
        book.inited.fill_(1.0)


def _speechlike(count: int, seconds: float, rate: int, seed: int) -> np.ndarray:
    """``[count, T]`` float32 signals with speech-like structure.

    Voiced syllables (a gliding 80-250 Hz pulse train shaped by three moving
    formants, ~4 syllables/s) alternate with noise bursts and pauses.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.empty((count, n), dtype=np.float32)
    for i in range(count):
        f0 = rng.uniform(80, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        syllable_rate = rng.uniform(3, 5)
        syllable = np.floor(t * syllable_rate).astype(int)
        formants = rng.uniform([300, 900, 2200], [900, 2300, 3200], size=(syllable.max() + 1, 3))[syllable]
        control = slice(None, None, 240)  # formant gains change slowly: evaluate every 10 ms, hold
        voiced = np.zeros(n)
        for h in range(1, 40):
            freq = h * f0[control]
            gain = np.exp(-(((freq[:, None] - formants[control]) / 120.0) ** 2)).sum(1) / h ** 0.5
            gain = np.where(freq < rate / 2, gain, 0.0)
            voiced += np.repeat(gain, 240)[:n] * np.sin(h * phase)
        noise = np.diff(rng.standard_normal(n + 1))  # high-pass noise for fricatives
        kind = rng.choice(3, size=syllable.max() + 1, p=[0.65, 0.2, 0.15])[syllable]  # voiced / noise / pause
        envelope = np.sin(np.pi * (t * syllable_rate % 1.0)) ** 2
        signal = np.where(kind == 0, voiced, np.where(kind == 1, 0.3 * noise, 0.0)) * envelope
        out[i] = 0.3 * signal / (np.abs(signal).max() + 1e-9)
    return out
