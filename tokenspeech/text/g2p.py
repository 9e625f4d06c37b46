"""Grapheme-to-phoneme conversion with the espeak-ng library.

We call ``libespeak-ng`` (Debian package ``libespeak-ng1``) through ctypes
instead of a Python binding from PyPI: the embedded runtime must phonemise
with nothing but onnxruntime, NumPy and soundfile installed, and the one
function we need (``espeak_TextToPhonemes``) is a stable C API. Spawning the
``espeak-ng`` program per sentence costs ~10 ms; the library call costs well
under 1 ms.

espeak-ng returns one clause at a time and drops the punctuation between
clauses, so we split on punctuation ourselves and put each mark back as a
phoneme token: pauses at commas and the intonation of questions are learnt
from them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading

from tokenspeech.errors import ConfigError, TextError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_CLAUSE_RE = re.compile(r"([^,.;:!?]+)([,.;:!?]*)")

PUNCTUATION = ",.;:!?"


class _EspeakVoice(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h, used to select a voice by language."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class EspeakPhonemizer:
    """Text -> IPA phoneme string through libespeak-ng, for one voice.

    The library keeps global state, so every call is serialised by a lock
    shared by all instances in the process. Instances are cheap; the library
    is loaded and initialised once, on first use (never at import).
    """

    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _current_voice: str | None = None

    def __init__(self, voice: str = "en-us") -> None:
        self.voice = voice

    @classmethod
    def _library(cls) -> ctypes.CDLL:
        if cls._lib is None:
            path = ctypes.util.find_library("espeak-ng")
            if path is None:
                raise ConfigError(
                    "libespeak-ng was not found; install it (Debian/Ubuntu: apt-get install espeak-ng)"
                )
            lib = ctypes.CDLL(path)
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.restype = ctypes.c_int
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
            lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_EspeakVoice)]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) < 0:
                raise ConfigError("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
            cls._lib = lib
        return cls._lib

    def _select_voice(self, lib: ctypes.CDLL) -> None:
        if EspeakPhonemizer._current_voice != self.voice:
            # A voice name ("en-us+m3") first, then a language code ("en-gb"), as espeak-ng -v does.
            by_name = lib.espeak_SetVoiceByName(self.voice.encode()) == 0
            if not by_name:
                spec = _EspeakVoice(languages=self.voice.encode())
                by_language = lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == 0
            if not by_name and not by_language:
                EspeakPhonemizer._current_voice = None
                raise ConfigError(f"espeak-ng has no voice named {self.voice!r} (see `espeak-ng --voices`)")
            EspeakPhonemizer._current_voice = self.voice

    def _clause_phonemes(self, lib: ctypes.CDLL, clause: str) -> str:
        buffer = ctypes.create_string_buffer(clause.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        pieces = []
        while pointer.value:
            result = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _ESPEAK_CHARS_UTF8, _PHONEMES_IPA)
            if result:
                pieces.append(result.decode("utf-8", errors="replace").strip())
        return " ".join(p for p in pieces if p)

    def phonemize(self, text: str) -> str:
        """Return IPA phonemes for spoken-form ``text``; words split by spaces.

        Punctuation marks stay as their own tokens: ``"hello, world."`` becomes
        ``"həlˈoʊ, wˈɜːld."``. Raises :class:`TextError` when nothing in the
        text can be spoken.
        """
        if not text or not text.strip():
            raise TextError("cannot phonemise empty text")
        with self._lock:
            lib = self._library()
            self._select_voice(lib)
            parts = []
            for words, marks in _CLAUSE_RE.findall(text):
                phonemes = self._clause_phonemes(lib, words.strip()) if words.strip() else ""
                if phonemes:
                    parts.append(phonemes + marks[:1])
                elif parts and marks:
                    parts[-1] += marks[:1]
        result = " ".join(parts)
        if not result.strip(PUNCTUATION + " "):
            raise TextError(f"no speakable words in {text[:60]!r}")
        return result
