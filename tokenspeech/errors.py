"""The exceptions users of tokenspeech see.

Every error that crosses a public boundary (CLI, library call, gRPC) is one of
these, with a message a person can act on. The server maps them to gRPC status
codes in one place (``serving``); the CLI prints them without a traceback.
"""

from __future__ import annotations


class TokenspeechError(Exception):
    """Base class of every error tokenspeech raises on purpose."""


class AudioError(TokenspeechError):
    """An audio input is missing, unreadable, empty, silent or too long.

    The message always names the file (or says the audio came from memory) and
    the problem.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class TextError(TokenspeechError):
    """Text input cannot be used: empty, too long, or nothing speakable in it."""


class ConfigError(TokenspeechError, ValueError):
    """Options that are invalid alone or in combination (also a ``ValueError``)."""


class ModelLoadError(TokenspeechError):
    """A model or its weights could not be found or do not match their card."""


class TokenFileError(TokenspeechError):
    """A codec token file is corrupt, truncated, or not a tokenspeech file."""
