"""What the server needs from a loaded model (the engine protocols) and the backends that load them.

The servicers only talk to :class:`TtsEngine`, :class:`AsrEngine` and
:class:`CodecEngine`, with NumPy arrays. Both backends wrap the same library
pipelines (``Synthesizer``, ``AsrRecognizer``): :class:`TorchBackend` over
PyTorch modules, :class:`tokenspeech.serving.onnx_backend.OnnxBackend` over
ONNX Runtime sessions (``tokenspeech.runtime``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tokenspeech.asr.base import Transcript
from tokenspeech.decoding.calls import Program
from tokenspeech.serving.config import ServerConfig


class TtsEngine(Protocol):
    """A synthesizer (``tokenspeech.tts.Synthesizer`` is one)."""

    voices: tuple[str, ...]
    sample_rate: int

    def stream(self, text: str, options: Any) -> Iterator[Any]:
        """``AudioChunk``s of ``text`` with ``SynthesisOptions``; text/option errors before the first chunk.

        An engine may also offer ``stream_program(text, options)``, the same as
        a program that yields its model passes (see :func:`synthesis_program`).
        """
        ...


def synthesis_program(engine: TtsEngine, text: str, options: Any) -> Program[None]:
    """The chunks of ``text`` as a streaming program whose model passes the batcher can share across streams.

    An engine with ``stream_program`` (``Synthesizer``) yields its passes as
    calls; any other engine's ``stream`` is a program without calls (its
    steps run one after another).
    """
    stream_program = getattr(engine, "stream_program", None)
    if stream_program is not None:
        yield from stream_program(text, options)
    else:
        yield from engine.stream(text, options)


class RecognitionStream(Protocol):
    """A streaming recognition session (``tokenspeech.asr.engine.StreamingSession`` is one).

    A session may also offer ``accept_audio_program(samples)`` and
    ``finish_program()``, the same as programs whose encoder passes the
    batcher can share across streams (see :func:`accept_audio_program`).
    """

    def accept_audio(self, samples: np.ndarray) -> Transcript: ...

    def finish(self) -> Transcript: ...


def accept_audio_program(stream: RecognitionStream, samples: np.ndarray) -> Program[Transcript]:
    """``stream.accept_audio(samples)`` as a program: batched with other streams' passes where the session allows."""
    program = getattr(stream, "accept_audio_program", None)
    if program is not None:
        return (yield from program(samples))
    return stream.accept_audio(samples)


def finish_program(stream: RecognitionStream) -> Program[Transcript]:
    """``stream.finish()`` as a program, like :func:`accept_audio_program`."""
    program = getattr(stream, "finish_program", None)
    if program is not None:
        return (yield from program())
    return stream.finish()


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

    def kinds(self, path: Path) -> tuple[str, ...]:
        """The models (``tts``, ``asr``) a ``--models`` path serves with this backend."""
        ...

    def load_tts(self, path: Path, codec: CodecEngine) -> TtsEngine: ...

    def load_asr(self, path: Path) -> AsrEngine: ...

    def load_codec(self, path: Path | None) -> CodecEngine: ...


class RecognizerEngine:
    """:class:`AsrEngine` over one ASR backend (PyTorch or ONNX): one recogniser per decoder, made on first use.

    All recognisers share the backend, so the networks (or ONNX sessions) are loaded once.
    """

    def __init__(self, backend: Any, vocabulary: Any, mel: Any, lm: str | Path | None = None) -> None:
        """``backend`` is an ``AsrBackend`` (:mod:`tokenspeech.asr.engine`); ``mel`` its ``MelConfig``;
        ``lm`` the language model of ``ctc``, ``ar`` and ``paraformer`` (:func:`tokenspeech.asr.lm.load_lm`: default
        shipped, ``"none"``)."""
        from tokenspeech.asr.engine import RecognizerOptions
        from tokenspeech.asr.lm import load_lm

        self.lm = load_lm(lm, vocabulary)
        self.backend = backend
        self.vocabulary = vocabulary
        self.mel = mel
        self.sample_rate = mel.sample_rate
        self.max_seconds = RecognizerOptions().max_seconds
        self.decoders = tuple(backend.decoders)
        # the first is the default: streaming ctc with the LM (docs/asr.md, session 13: far fewer errors than semiar)
        self.streaming_decoders = tuple(d for d in ("ctc", "semiar") if d in self.decoders)
        self._recognizers: dict[str, Any] = {}

    def recognizer(self, decoder: str) -> Any:
        from tokenspeech.asr.engine import LM_DECODERS, AsrRecognizer, RecognizerOptions

        if decoder not in self._recognizers:
            self._recognizers[decoder] = AsrRecognizer(self.backend, self.vocabulary, self.mel,
                                                       RecognizerOptions(decoder=decoder),
                                                       self.lm if decoder in LM_DECODERS else None)
        return self._recognizers[decoder]

    def transcribe_batch(self, audios: Sequence[np.ndarray], decoder: str) -> list[Transcript]:
        return self.recognizer(decoder).transcribe_batch(audios)

    def open_stream(self, decoder: str) -> RecognitionStream:
        return self.recognizer(decoder).stream(decoder)


class TorchAsrEngine(RecognizerEngine):
    """:class:`RecognizerEngine` over a loaded ASR bundle (PyTorch modules)."""

    def __init__(self, bundle: Any) -> None:
        from tokenspeech.asr.torch_backend import TorchAsrBackend

        super().__init__(TorchAsrBackend(bundle.model, bundle.mel), bundle.vocabulary, bundle.mel)
        self.bundle = bundle


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
    """Loads PyTorch models; their large matrix products run at ``precision`` (:mod:`tokenspeech.models.precision`)."""

    name = "torch"

    def __init__(self, precision: str = "fp32") -> None:
        from tokenspeech.models.precision import resolve_precision

        self.precision = resolve_precision(precision)  # "auto" settled once for every model it loads

    def kinds(self, path: Path) -> tuple[str, ...]:
        from tokenspeech.serving.model_files import card_kind

        return (card_kind(path),)

    def load_tts(self, path: Path, codec: CodecEngine) -> TtsEngine:
        from tokenspeech.models.precision import set_precision
        from tokenspeech.tts.model_io import load_tts_model
        from tokenspeech.tts.pipeline import Synthesizer

        bundle = load_tts_model(path)
        set_precision(bundle.model, self.precision)
        return Synthesizer(bundle, codec.codec)  # type: ignore[attr-defined]

    def load_asr(self, path: Path) -> AsrEngine:
        from tokenspeech.asr.model_io import load_asr_model
        from tokenspeech.models.precision import set_precision

        bundle = load_asr_model(path)
        set_precision(bundle.model, self.precision)
        return TorchAsrEngine(bundle)

    def load_codec(self, path: Path | None) -> CodecEngine:
        from tokenspeech.codecs.native import load_native_codec
        from tokenspeech.models.precision import set_precision

        codec = load_native_codec(path)
        set_precision(codec.model, self.precision)
        return TorchCodecEngine(codec)


def get_backend(config: ServerConfig) -> Backend:
    """The backend ``config.backend`` names, set up as ``config`` says."""
    if config.backend == "torch":
        return TorchBackend(config.precision)
    from tokenspeech.runtime.sessions import RuntimeOptions
    from tokenspeech.serving.onnx_backend import OnnxBackend

    return OnnxBackend(RuntimeOptions(intra_op_threads=config.threads), config.onnx_cache)
