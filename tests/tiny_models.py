"""Tiny random models shared by the TTS, ASR and serving tests (CPU, one thread, seconds to build)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tokenspeech.asr.model_io import AsrBundle
from tokenspeech.codecs.native import NativeCodec
from tokenspeech.features import MelConfig
from tokenspeech.models.asr import AsrModel, AsrModelConfig
from tokenspeech.models.codec import CodecConfig, CodecModel
from tokenspeech.models.tts import TtsConfig, TtsModel
from tokenspeech.text.vocab import Vocabulary, character_vocabulary, phoneme_vocabulary
from tokenspeech.tts.model_io import TtsBundle

FIXTURE = Path(__file__).parent / "fixtures" / "corpus"
VOICES = ("joe", "espeak-us", "espeak-gb-f")
TINY_ASR = AsrModelConfig(dim=32, heads=4, encoder_layers=2, decoder_layers=1, ar_layers=1, subsample_channels=8,
                          conv_kernel=5, dropout=0.0, phoneme_vocab_size=12)


def tiny_codec() -> NativeCodec:
    torch.manual_seed(0)
    config = CodecConfig(encoder_fine_dim=8, encoder_fine_blocks=1, encoder_dim=16, encoder_blocks=1, latent_dim=8,
                         num_codebooks=4, codebook_size=32, decoder_dim=16, decoder_blocks=1, decoder_fine_dim=8,
                         decoder_fine_blocks=1)
    model = CodecModel(config)
    model.quantizer.codebooks.normal_()
    model.quantizer.initialized.fill_(True)
    return NativeCodec(model)


def tiny_tts_config(**overrides) -> TtsConfig:
    base = {"num_phonemes": 60, "num_voices": 3, "num_codebooks": 3, "codebook_size": 32, "dim": 32, "heads": 2,
            "ff_mult": 2, "text_layers": 1, "codec_layers": 2, "ar_layers": 1, "frame_layers": 1,
            "duration_channels": 16, "dropout": 0.0}
    return TtsConfig(**(base | overrides))


def fixture_vocabulary() -> Vocabulary:
    rows = [json.loads(line) for line in (FIXTURE / "train.jsonl").read_text().splitlines()]
    return phoneme_vocabulary(row["phonemes"] for row in rows)


def tiny_tts_bundle() -> TtsBundle:
    """A random TTS model over :func:`tiny_codec` tokens that speaks ~1.5 frames per phoneme."""
    vocabulary = fixture_vocabulary()
    torch.manual_seed(1)
    model = TtsModel(tiny_tts_config(num_phonemes=len(vocabulary)))
    with torch.no_grad():
        model.duration.out.bias.fill_(float(np.log1p(1.5)))
        for block in model.conditioner.frames.blocks:  # they start as the identity; make them do something
            block.attention.out.weight.normal_(0.0, 0.2)
            block.ff[-1].weight.normal_(0.0, 0.2)
    return TtsBundle(model.eval(), vocabulary, VOICES, tiny_codec().info)


def tiny_asr_bundle() -> AsrBundle:
    """A random ASR model with every decoder, whose CIF fires several tokens per second."""
    torch.manual_seed(0)
    model = AsrModel(TINY_ASR).eval()
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(0.5)
    return AsrBundle(model, character_vocabulary(), MelConfig(), Vocabulary.from_symbols("abcdefgh"))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding, amplitude-modulated tone with a little noise, 16 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = np.sin(2 * np.pi * (150 + 100 * np.sin(2 * np.pi * 0.7 * t)) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * tone + 0.02 * rng.normal(size=t.size)).astype(np.float32)
