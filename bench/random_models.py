"""Random TTS and ASR models of the default (or a tiny) size, saved as artifacts: for benches without trained models.

Used by ``bench/onnx_speed.py`` and ``bench/grpc_load.py``. The TTS speaks over the
given tscodec (default: shipped) at ~2.5 frames (100 ms) per phoneme, the
ASR's CIF fires tokens; their speed is meaningful, their output is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokenspeech.asr.model_io import AsrBundle, save_asr_model
from tokenspeech.codecs.native import NativeCodec, default_weights_path, load_native_codec
from tokenspeech.features import MelConfig
from tokenspeech.text.vocab import character_vocabulary, phoneme_vocabulary
from tokenspeech.tts.model_io import TtsBundle, save_tts_model

SIZES = ("default", "tiny")
FIXTURE_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus"
VOICES = ("joe", "espeak-us", "espeak-gb-f")
_TINY_TTS = {"dim": 64, "heads": 2, "text_layers": 1, "codec_layers": 2, "ar_layers": 1, "duration_channels": 32,
             "num_codebooks": 2}
_TINY_ASR = {"dim": 64, "heads": 2, "encoder_layers": 2, "decoder_layers": 1, "ar_layers": 1,
             "subsample_channels": 16, "conv_kernel": 7}


@dataclass(frozen=True)
class ModelPaths:
    tts: Path
    asr: Path
    codec: Path


def random_tts(size: str, codec: NativeCodec) -> TtsBundle:
    """``TtsConfig`` defaults (or tiny dims) over ``codec``'s codebook size, phonemes of the test fixture corpus."""
    from tokenspeech.models.tts import TtsConfig, TtsModel

    rows = [json.loads(line) for line in (FIXTURE_CORPUS / "train.jsonl").read_text().splitlines() if line]
    vocabulary = phoneme_vocabulary(row["phonemes"] for row in rows)
    config = TtsConfig(num_phonemes=len(vocabulary), num_voices=len(VOICES), codebook_size=codec.info.codebook_size,
                       dropout=0.0, **(_TINY_TTS if size == "tiny" else {}))
    torch.manual_seed(0)
    model = TtsModel(config).eval()
    with torch.no_grad():
        model.duration.out.weight.mul_(0.05)
        model.duration.out.bias.fill_(float(np.log1p(2.5)))
    return TtsBundle(model, vocabulary, VOICES, codec.info)


def random_asr(size: str) -> AsrBundle:
    """``AsrModelConfig`` defaults (or tiny dims), every decoder, character vocabulary."""
    from tokenspeech.models.asr import AsrModel, AsrModelConfig

    torch.manual_seed(0)
    model = AsrModel(AsrModelConfig(dropout=0.0, **(_TINY_ASR if size == "tiny" else {}))).eval()
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(0.5)
    return AsrBundle(model, character_vocabulary(), MelConfig())


def save_random_models(size: str, folder: Path, codec_path: Path | None = None) -> ModelPaths:
    """Build and save ``folder/tts.*`` and ``folder/asr.*``; the TTS belongs to the codec at ``codec_path``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    codec_path = codec_path or default_weights_path()
    codec = load_native_codec(codec_path)
    tts = random_tts(size, codec)
    save_tts_model(tts.model, folder / "tts", tts.phonemes, tts.voices, codec.info)
    asr = random_asr(size)
    save_asr_model(asr.model, folder / "asr", asr.vocabulary, asr.mel)
    return ModelPaths(folder / "tts.safetensors", folder / "asr.safetensors", codec_path)
