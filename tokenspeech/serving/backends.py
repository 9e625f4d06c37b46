"""What the server needs from a loaded model (the engine protocols) and the backends that load them.

The servicers only talk to :class:`TtsEngine`, :class:`AsrEngine` and
:class:`CodecEngine`, with NumPy arrays. The PyTorch backend wraps the
library pipelines; an ONNX Runtime backend (``tokenspeech.runtime``) plugs in
by implementing :class:`Backend` and adding itself to :func:`get_backend`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tokenspeech.asr.base import Transcript
from tokenspeech.errors import ConfigError


class TtsEngine(Protocol):
    """A synthesizer (``tokenspeech.tts.Synthesizer`` is one)."""

    voices: tuple[str, ...]
    sample_rate: int

    def stream(self, text: str, options: Any) -> Iterator[Any]:
        """``AudioChunk``s of ``text`` with ``SynthesisOptions``; text/option errors before the first chunk."""
        ...


class RecognitionStream(Protocol):
    def accept_audio(self, samples: np.ndarray) -> Transcript: ...

    def finish(self) -> Transcript: ...


class AsrEngine(Protocol):
    sample_rate: int
    max_seconds: float
    decoders: tuple[str, ...]
    streaming_decoders: tuple[str, ...]

    def transcribe_batch(self, audios: Sequence[np.ndarray], decoder: str) -> list[Transcript]: ...

    def open_stream(self, decoder: str) -> RecognitionStream: ...


class CodecEngine(Protocol):
    info: Any  # CodecInfo

    def encode(self, wav: np.ndarray, codebooks: int | None) -> np.ndarray:
        """``wav [T]`` float32 at ``info.sample_rate`` -> codes ``[K, F]`` int64."""
        ...

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes ``[K, F]`` -> ``wav [T]`` float32."""
        ...


class Backend(Protocol):
    name: str

    def load_tts(self, path: Path, codec: CodecEngine) -> TtsEngine: ...

    def load_asr(self, path: Path) -> AsrEngine: ...

    def load_codec(self, path: Path | None) -> CodecEngine: ...


class TorchAsrEngine:
    """:class:`AsrEngine` over a loaded ASR bundle; one recogniser per decoder, made on first use."""

    def __init__(self, bundle: Any) -> None:
        from tokenspeech.asr.recognizer import RecognizerOptions

        self.bundle = bundle
        self.sample_rate = bundle.mel.sample_rate
        self.max_seconds = RecognizerOptions().max_seconds
        self.decoders = tuple(bundle.model.config.decoders)
        self.streaming_decoders = tuple(d for d in ("semiar", "ctc") if d in self.decoders)
        self._recognizers: dict[str, Any] = {}

    def recognizer(self, decoder: str) -> Any:
        from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer

        if decoder not in self._recognizers:
            self._recognizers[decoder] = TorchRecognizer(self.bundle, RecognizerOptions(decoder=decoder))
        return self._recognizers[decoder]

    def transcribe_batch(self, audios: Sequence[np.ndarray], decoder: str) -> list[Transcript]:
        return self.recognizer(decoder).transcribe_batch(audios)

    def open_stream(self, decoder: str) -> RecognitionStream:
        return self.recognizer(decoder).stream(decoder)


class TorchCodecEngine:
    """:class:`CodecEngine` over an ``AudioTokenizer`` that takes torch tensors."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.info = codec.info

    def encode(self, wav: np.ndarray, codebooks: int | None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            codes = self.codec.encode(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None, None],
                                      codebooks)
        return codes[0].numpy().astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            wav = self.codec.decode(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64))[None])
        return wav[0, 0].float().numpy()


class TorchBackend:
    name = "torch"

    def load_tts(self, path: Path, codec: CodecEngine) -> TtsEngine:
        from tokenspeech.tts.model_io import load_tts_model
        from tokenspeech.tts.pipeline import Synthesizer

        return Synthesizer(load_tts_model(path), codec.codec)  # type: ignore[attr-defined]

    def load_asr(self, path: Path) -> AsrEngine:
        from tokenspeech.asr.model_io import load_asr_model

        return TorchAsrEngine(load_asr_model(path))

    def load_codec(self, path: Path | None) -> CodecEngine:
        from tokenspeech.codecs.native import load_native_codec

        return TorchCodecEngine(load_native_codec(path))


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ``onnx`` is refused until ``tokenspeech.runtime`` provides one."""
    if name == "torch":
        return TorchBackend()
    if name == "onnx":
        raise ConfigError("the ONNX Runtime backend is not available yet (tokenspeech.runtime is still being "
                          "built); start the server with --backend torch")
    raise ConfigError(f"unknown backend {name!r}; choose torch or onnx")
