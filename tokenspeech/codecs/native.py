"""tscodec: our own trained streaming codec behind the AudioTokenizer seam.

16 kHz mono, 25 code frames per second (hop 640), up to 24 residual
codebooks of 1024 codes: 6 codebooks = 1.5 kbps, 12 = 3 kbps, 24 = 6 kbps,
all from one model. Streaming with 70 ms algorithmic latency (see
:mod:`tokenspeech.models.codec` for the arithmetic). The decoded audio is
``output_delay_samples`` (480, 30 ms) late: ``decode(encode(x))[n] ~ x[n - 480]``,
offline and streaming alike.

Artifacts: ``<name>.safetensors`` (float16 weights) + ``<name>.json`` (model
card: architecture, codec info, latency, training data, metrics). The
default location is ``tokenspeech/assets/tscodec.safetensors``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenspeech.artifacts import artifact_paths, read_card, read_weights, write_artifact
from tokenspeech.codecs.base import CodecInfo
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.models.codec import CodecConfig, CodecModel, DecoderState, EncoderState

logger = logging.getLogger(__name__)

NAME = "tscodec"
VERSION = "1"
CARD_FORMAT_VERSION = 1
# Training-only buffers: EMA statistics of the codebooks, not needed to encode or decode.
TRAINING_ONLY_KEYS = ("quantizer.cluster_size", "quantizer.embed_sum", "quantizer.idle",
                      "quantizer.initialized")
TRAIN_HINT = ("train them with `tokenspeech train codec --corpus DIR --out DIR` and copy DIR/tscodec.safetensors "
              "and DIR/tscodec.json into tokenspeech/assets/, or pass the path of a trained codec")


def default_weights_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / f"{NAME}.safetensors"


def codec_info(config: CodecConfig) -> CodecInfo:
    return CodecInfo(name=NAME, version=VERSION, sample_rate=config.sample_rate, frame_rate=config.frame_rate,
                     num_codebooks=config.num_codebooks, codebook_size=config.codebook_size)


class NativeCodec:
    """AudioTokenizer over a :class:`CodecModel` (PyTorch, inference mode).

    - ``encode(wav [B, 1, T], codebooks) -> codes [B, k, ceil(T / 640)]`` int64
      (``T`` is zero-padded at the end to whole frames)
    - ``decode(codes [B, k, F]) -> wav [B, 1, F * 640]`` float32, any ``k <= 24``
    - ``encode_step`` / ``decode_step``: chunks of whole frames, typed states
      :class:`EncoderState` / :class:`DecoderState`; concatenated outputs equal
      the offline ones (to float rounding).
    """

    def __init__(self, model: CodecModel, card: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.config = model.config
        self.info = codec_info(model.config)
        self.card = card or {}

    @property
    def output_delay_samples(self) -> int:
        """Decoded sample ``n`` reconstructs input sample ``n - output_delay_samples``."""
        return self.config.output_delay

    @property
    def latency_ms(self) -> float:
        return 1000 * self.config.latency_samples / self.config.sample_rate

    def _codebooks(self, codebooks: int | None) -> int:
        k = self.info.num_codebooks if codebooks is None else codebooks
        if not isinstance(k, int) or not 1 <= k <= self.info.num_codebooks:
            top = self.info.num_codebooks
            rungs = sorted({n for n in (top // 4, top // 2, top) if n >= 1})
            ladder = ", ".join(f"{n} = {self.info.bitrate_kbps(n):g} kbps" for n in rungs)
            raise ConfigError(f"{NAME}: codebooks must be an integer in 1..{top}, got {codebooks!r} ({ladder})")
        return k

    def _wav(self, wav: Any) -> Tensor:
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ConfigError(f"{NAME}: expected mono audio [B, 1, T], got shape {tuple(wav.shape)}")
        return wav

    def _codes(self, codes: Any) -> Tensor:
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.info.num_codebooks:
            raise ConfigError(f"{NAME}: expected codes [B, K, F] with 1 <= K <= {self.info.num_codebooks}, "
                              f"got shape {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.info.codebook_size):
            raise ConfigError(f"{NAME}: codes must be in [0, {self.info.codebook_size}), got "
                              f"{int(codes.min())}..{int(codes.max())}")
        return codes

    def _whole_frames(self, wav: Tensor) -> None:
        if wav.shape[-1] % self.info.hop_length:
            raise ConfigError(f"{NAME}: streaming chunks must be whole frames (a multiple of "
                              f"{self.info.hop_length} samples), got {wav.shape[-1]}")

    @torch.inference_mode()
    def encode(self, wav: Any, codebooks: int | None = None) -> Tensor:
        wav, k = self._wav(wav), self._codebooks(codebooks)
        pad = -wav.shape[-1] % self.info.hop_length
        return self.model.encode(torch.nn.functional.pad(wav, (0, pad)), k)

    @torch.inference_mode()
    def decode(self, codes: Any) -> Tensor:
        return self.model.decode(self._codes(codes))

    def init_encode_state(self, batch_size: int) -> EncoderState:
        return self.model.init_encode_state(batch_size)

    @torch.inference_mode()
    def encode_step(self, wav: Any, state: EncoderState, codebooks: int | None = None) -> tuple[Tensor, EncoderState]:
        wav, k = self._wav(wav), self._codebooks(codebooks)
        self._whole_frames(wav)
        return self.model.encode_step(wav, state, k)

    def init_decode_state(self, batch_size: int) -> DecoderState:
        return self.model.init_decode_state(batch_size)

    @torch.inference_mode()
    def decode_step(self, codes: Any, state: DecoderState) -> tuple[Tensor, DecoderState]:
        return self.model.decode_step(self._codes(codes), state)


# ----------------------------------------------------------------------------- artifacts


def save_native_codec(model: CodecModel, config: CodecConfig, path: Path,
                      card_extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write float16 weights and the JSON card (atomically); returns ``(weights, card)`` paths."""
    weights_path, card_path = artifact_paths(path)
    info = codec_info(config)
    card = {
        "format_version": CARD_FORMAT_VERSION,
        "name": NAME,
        "codec": info.to_json(),
        "architecture": config.to_json(),
        "latency": {"algorithmic_ms": 1000 * config.latency_samples / config.sample_rate,
                    "frame_samples": config.hop_length, "output_delay_samples": config.output_delay},
        "bitrates_kbps": {str(k): info.bitrate_kbps(k) for k in (6, 12, 24) if k <= config.num_codebooks},
        "parameters": int(sum(v.numel() for k, v in model.state_dict().items() if k not in TRAINING_ONLY_KEYS)),
        "weights_dtype": "float16",
        **(card_extra or {}),
    }
    write_artifact(weights_path, card_path, model, card, CARD_FORMAT_VERSION, exclude=TRAINING_ONLY_KEYS)
    return weights_path, card_path


def _read_card(card_path: Path) -> tuple[dict[str, Any], CodecConfig]:
    card = read_card(card_path, None, CARD_FORMAT_VERSION, f"a {NAME}")
    try:
        return card, CodecConfig.from_json(card["architecture"])
    except (KeyError, TypeError, ConfigError) as error:
        raise ModelLoadError(f"{card_path}: not a readable {NAME} model card ({error})") from error


def load_native_codec(path: Path | None = None) -> NativeCodec:
    """Load ``<name>.safetensors`` + ``<name>.json`` (default: the shipped ``assets/tscodec``).

    Raises :class:`ModelLoadError` when a file is missing, unreadable, or the
    weights do not match the architecture in the card.
    """
    from safetensors import SafetensorError

    weights_path, card_path = artifact_paths(path if path is not None else default_weights_path())
    missing = [str(p) for p in (weights_path, card_path) if not p.is_file()]
    if missing:
        raise ModelLoadError(f"{NAME} weights not found: missing {', '.join(missing)}; {TRAIN_HINT}")
    card, config = _read_card(card_path)
    try:
        tensors = read_weights(weights_path)
    except (OSError, SafetensorError) as error:
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({error})") from error
    model = CodecModel(config)
    _load_weights(model, tensors, weights_path)
    logger.debug("loaded %s from %s", NAME, weights_path)
    return NativeCodec(model, card)


def _load_weights(model: CodecModel, tensors: dict[str, Tensor], source: Path) -> None:
    expected = {k: v for k, v in model.state_dict().items() if k not in TRAINING_ONLY_KEYS}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ModelLoadError(f"{source}: weights do not match the card's architecture (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]})")
    model.load_state_dict(tensors, strict=False)
    model.quantizer.initialized.fill_(True)
