"""Training augmentation: vocal-tract-length perturbation moves formants and nothing else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenspeech.features import MelConfig, mel_filterbank
from tokenspeech.models.frontend import LogMel
from tokenspeech.text.vocab import character_vocabulary
from tokenspeech.training.asr_data import AsrExample, BatchMaker
from tokenspeech.training.augment import AugmentOptions, vtlp_filterbanks, vtlp_frequencies

CONFIG = MelConfig()
BINS = np.arange(CONFIG.n_bins) * CONFIG.sample_rate / CONFIG.n_fft
NYQUIST = CONFIG.sample_rate / 2


@pytest.mark.parametrize("alpha", [0.9, 0.95, 1.05, 1.1])
def test_warp_is_monotonic_keeps_the_band_edges_and_scales_below_the_knee(alpha: float) -> None:
    warped = vtlp_frequencies(BINS, alpha, NYQUIST)
    assert warped[0] == 0 and warped[-1] == pytest.approx(NYQUIST)
    assert np.all(np.diff(warped) > 0)
    low = BINS < 3000
    np.testing.assert_allclose(warped[low], BINS[low] * alpha)


def test_no_warp_is_the_plain_filterbank() -> None:
    np.testing.assert_array_equal(vtlp_filterbanks(CONFIG, [1.0])[0].numpy(), mel_filterbank(CONFIG))
    np.testing.assert_array_equal(mel_filterbank(CONFIG, BINS), mel_filterbank(CONFIG))


def _peak_band(hz: float, weights: torch.Tensor | None = None) -> int:
    t = np.arange(16000) / 16000
    wav = torch.from_numpy(np.sin(2 * np.pi * hz * t).astype(np.float32))[None]
    mel = LogMel(CONFIG)(wav, weights)
    return int(mel[0].mean(dim=1).argmax())


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_warped_features_look_like_a_formant_moved_by_alpha(alpha: float) -> None:
    """A 1 kHz tone through the warped filterbank peaks where a 1 kHz * alpha tone does unwarped."""
    warped = _peak_band(1000.0, vtlp_filterbanks(CONFIG, [alpha]))
    assert warped == _peak_band(1000.0 * alpha)
    assert warped != _peak_band(1000.0)


def _maker(tmp_path: Path, vtlp_prob: float) -> tuple[BatchMaker, list[AsrExample]]:
    rng = np.random.default_rng(0)
    examples = []
    for index in range(3):
        path = tmp_path / f"{index}.wav"
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        examples.append(AsrExample(str(index), path, "a b", "", 0.5))
    options = replace(AugmentOptions.none(), vtlp_prob=vtlp_prob)
    return BatchMaker(LogMel(CONFIG), character_vocabulary(), None, options), examples


def test_batches_are_warped_only_in_training_and_only_when_asked(tmp_path: Path) -> None:
    plain, examples = _maker(tmp_path, 0.0)
    warping, _ = _maker(tmp_path, 1.0)
    reference = plain.make(examples, seed=3).mel
    torch.testing.assert_close(plain.make(examples, seed=3, train=False).mel, reference)
    torch.testing.assert_close(warping.make(examples, seed=3, train=False).mel, reference)
    warped = warping.make(examples, seed=3).mel
    assert warped.shape == reference.shape
    assert all(not torch.allclose(warped[row], reference[row]) for row in range(len(examples)))
    torch.testing.assert_close(warping.make(examples, seed=3).mel, warped)  # seeded: reproducible


def test_options_reject_a_bad_warp_range() -> None:
    with pytest.raises(ValueError, match="vtlp_alpha"):
        AugmentOptions(vtlp_alpha=(1.1, 0.9))
    with pytest.raises(ValueError, match="vtlp_prob"):
        AugmentOptions(vtlp_prob=1.5)
