"""Phoneme forced alignment with the ASR model's phoneme CTC head (durations for TTS training).

Axes: S samples, T encoder frames (40 ms), P phonemes in the sequence.
"""

from __future__ import annotations

import numpy as np
import torch

from tokenspeech.asr.model_io import AsrBundle
from tokenspeech.errors import AudioError, ConfigError
from tokenspeech.models.asr import FRAME_SECONDS
from tokenspeech.models.frontend import LogMel


@torch.inference_mode()
def align_phonemes(bundle: AsrBundle, wav: np.ndarray, phoneme_ids: list[int] | np.ndarray) -> np.ndarray:
    """Frames (40 ms each) of every phoneme: ``wav [S]`` 16 kHz, ``phoneme_ids [P]`` -> ``int64 [P]``.

    The CTC Viterbi path (``torchaudio.functional.forced_align``) gives each
    phoneme a span of frames; blank frames after a phoneme are added to it
    and leading blanks to the first phoneme, so the durations are positive
    and sum to the utterance's encoder frames ``T``. Ids come from
    ``bundle.phonemes`` (``bundle.phonemes.encode(manifest_row["phonemes"])``).
    Multiply by ``FRAME_SECONDS`` (0.04) for seconds.
    """
    import torchaudio.functional as AF

    if bundle.phonemes is None or bundle.model.phoneme_ctc is None:
        raise ConfigError("this ASR model has no phoneme CTC head; train it with phonemes")
    ids = torch.as_tensor(np.asarray(phoneme_ids, dtype=np.int64))
    if ids.numel() == 0 or int(ids.min()) < 1 or int(ids.max()) >= len(bundle.phonemes):
        raise ConfigError("phoneme_ids must be non-empty ids of bundle.phonemes (blank id 0 excluded)")
    audio = torch.from_numpy(np.asarray(wav, dtype=np.float32).reshape(1, -1))
    mel = LogMel(bundle.mel)(audio)
    encoded, _ = bundle.model.encode(mel, torch.tensor([mel.shape[2]]))
    log_probs = bundle.model.phoneme_log_probs(encoded).float()
    frames = log_probs.shape[1]
    needed = ids.numel() + int((ids[1:] == ids[:-1]).sum())
    if frames < needed:
        raise AudioError("audio (from memory)", f"{frames * FRAME_SECONDS:.2f} s is too short to align "
                         f"{ids.numel()} phonemes (needs {needed} frames of 40 ms)")
    path, scores = AF.forced_align(log_probs, ids[None], blank=0)
    spans = AF.merge_tokens(path[0], scores[0].exp(), blank=0)
    starts = np.array([0] + [span.start for span in spans[1:]] + [frames], dtype=np.int64)
    return np.diff(starts)


def durations_to_seconds(durations: np.ndarray) -> np.ndarray:
    """Frame counts from :func:`align_phonemes` -> seconds (float64)."""
    return np.asarray(durations, dtype=np.float64) * FRAME_SECONDS
