"""The request logic both APIs share: validate, take a stream slot, step the model, encode the audio.

Servicers (``native``, ``riva``) map their protos onto :class:`SynthesisRequest`
and :class:`RecognitionRequest` and back; everything a request can get wrong
is checked here, before any compute, and raised as a tokenspeech error that
``status`` maps to a gRPC code.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tokenspeech.asr.base import Transcript
from tokenspeech.decoding.calls import Program
from tokenspeech.errors import AudioError, ConfigError, TextError
from tokenspeech.serving.audio_format import (
    OGG_OPUS,
    PCM16,
    AudioDecoder,
    AudioEncoder,
    AudioFormat,
    decode_audio,
    is_wav,
)
from tokenspeech.serving.backends import (
    AsrEngine,
    TtsEngine,
    accept_audio_program,
    finish_program,
    synthesis_program,
)
from tokenspeech.serving.metrics import Metrics
from tokenspeech.serving.registry import Loaded, ModelRegistry
from tokenspeech.serving.sessions import SteppedStream, StreamGate
from tokenspeech.serving.status import NotFoundError

MAX_STREAM_SECONDS = 600.0  # one recognition stream; longer audio should be sent as several streams
DEFAULT_ASR_DECODER = "ctc"  # every ASR model has it
_SENTENCE_END = re.compile(r"[.!?;]\s")
_MAX_PENDING_CHARS = 5000  # streamed text without a sentence end; matches tts MAX_TEXT_CHARS


@dataclass(frozen=True)
class SynthesisRequest:
    """What a synthesis call asks for; empty or zero fields mean the defaults."""

    model: str = ""
    voice: str = ""
    decoder: str = ""
    steps: int = 0
    seed: int = 0
    rate: float = 0.0
    encoding: str = PCM16
    sample_rate: int = 0  # 0 = the model's rate
    guidance: float | None = None  # None = the decoder's default
    fine_guidance: float | None = None  # None = the decoder's default


@dataclass(frozen=True)
class AudioOut:
    """Encoded audio of one synthesis chunk."""

    audio: bytes
    format: AudioFormat
    sentence: int
    offset_seconds: float
    seconds: float
    final: bool


@dataclass(frozen=True)
class RecognitionRequest:
    model: str = ""
    decoder: str = ""  # empty = ctc (unary) or the model's streaming decoder (semiar, else ctc)
    encoding: str = ""
    sample_rate: int = 0
    interim: bool = False


@dataclass(frozen=True)
class RecognitionUpdate:
    transcript: Transcript
    final: bool
    audio_seconds: float


@dataclass(frozen=True)
class ModelDescription:
    name: str
    kind: str
    sample_rate: int
    voices: tuple[str, ...] = ()
    decoders: tuple[str, ...] = ()
    streaming_decoders: tuple[str, ...] = ()
    is_default: bool = False


@dataclass(frozen=True)
class _Synthesis:
    entry: Loaded[TtsEngine]
    options: Any  # tts.pipeline.SynthesisOptions
    format: AudioFormat


@dataclass
class _Progress:
    """How far one synthesis stream has got."""

    offset: float = 0.0  # seconds of audio sent
    sentence: int = 0  # index of the next sentence
    chunks: int = 0
    finished: bool = False  # the final chunk was sent

    def advance(self, out: AudioOut) -> None:
        self.offset += out.seconds
        self.sentence = out.sentence + 1
        self.chunks += 1
        self.finished = out.final


def text_segments(pending: str, final: bool) -> tuple[list[str], str]:
    """Split streamed text into complete sentences to speak now and the rest to keep.

    A sentence is complete when ``. ! ? ;`` is followed by white space (so
    "3.5" and a trailing "Dr." wait for more text); ``final`` flushes all.
    """
    if final:
        return ([pending] if pending.strip() else []), ""
    ends = [m.end() for m in _SENTENCE_END.finditer(pending)]
    if not ends:
        return [], pending
    ready, rest = pending[:ends[-1]], pending[ends[-1]:]
    return ([ready] if ready.strip() else []), rest


class SpeechService:
    def __init__(self, registry: ModelRegistry, max_streams: int, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.gate = StreamGate(max_streams, self.metrics.set_active)

    # ------------------------------------------------------------------ synthesis

    def _prepare_synthesis(self, request: SynthesisRequest) -> _Synthesis:
        from tokenspeech.tts.pipeline import DEFAULT_DECODER, SynthesisOptions, verify_options

        entry = self.registry.tts_model(request.model)
        voices = entry.engine.voices
        voice = request.voice or voices[0]
        if voice not in voices:
            raise NotFoundError(f"unknown voice {voice!r} for TTS model {entry.name!r}; it has: {', '.join(voices)}")
        options = SynthesisOptions(voice=voice, decoder=request.decoder or DEFAULT_DECODER,
                                   steps=request.steps or None, seed=int(request.seed), rate=request.rate or 1.0,
                                   guidance=request.guidance, fine_guidance=request.fine_guidance)
        verify_options(options, voices)
        fmt = AudioFormat(request.encoding or PCM16, request.sample_rate or entry.engine.sample_rate)
        return _Synthesis(entry, options, fmt)

    async def synthesize(self, request: SynthesisRequest, texts: AsyncIterator[str],
                         method: str) -> AsyncIterator[AudioOut]:
        """Audio of the text pieces in ``texts``, spoken sentence group by sentence group as they complete.

        Segment ``i`` of a streamed text is generated with seed ``seed + i``;
        a single text is one segment, so it matches the library's ``stream``.
        The last chunk has ``final`` set (it may be empty when the text
        stream ended after its last sentence was already spoken).
        """
        plan = self._prepare_synthesis(request)
        with self.gate.session():
            started = time.perf_counter()
            encoder = AudioEncoder(plan.format, plan.entry.engine.sample_rate)
            progress = _Progress()
            segment, pending = 0, ""
            async for piece in _with_end(texts):
                ended = piece is None
                if not ended and len(pending) > _MAX_PENDING_CHARS:  # checked as more arrives: bounds the buffer
                    raise TextError(f"{len(pending)} characters arrived without a sentence end; end sentences with "
                                    f". ! ? or ; (at most {_MAX_PENDING_CHARS} characters each)")
                ready, pending = text_segments(pending + (piece or ""), ended)
                for text in ready:
                    options = replace(plan.options, seed=plan.options.seed + segment)
                    async for out in self._segment(plan, text, options, encoder, ended, progress):
                        if progress.chunks == 1:
                            self.metrics.observe_first_chunk(method, time.perf_counter() - started)
                        yield out
                    segment += 1
            if segment == 0:
                raise TextError("the text is empty; give at least one word to speak")
            if not progress.finished:
                yield AudioOut(encoder.finish(), plan.format, max(0, progress.sentence - 1), progress.offset, 0.0,
                               True)
            self.metrics.observe_rtf(method, time.perf_counter() - started, progress.offset)

    async def _segment(self, plan: _Synthesis, text: str, options: Any, encoder: AudioEncoder, last: bool,
                       progress: _Progress) -> AsyncIterator[AudioOut]:
        engine = plan.entry.engine
        base = progress.sentence

        def session() -> Program[None]:  # runs on the model's worker, phonemisation included
            yield from synthesis_program(engine, text, options)

        async with SteppedStream(plan.entry.batcher, session()) as stream:
            async for chunk in stream:
                final = last and chunk.final
                data = encoder.push(chunk.audio) + (encoder.finish() if final else b"")
                seconds = chunk.audio.shape[0] / engine.sample_rate
                out = AudioOut(data, plan.format, base + chunk.sentence, progress.offset, seconds, final)
                progress.advance(out)
                yield out

    # ------------------------------------------------------------------ recognition

    def _prepare_recognition(self, request: RecognitionRequest, streaming: bool,
                             audio: bytes = b"") -> tuple[Loaded[AsrEngine], str, AudioFormat]:
        entry = self.registry.asr_model(request.model)
        engine = entry.engine
        choices = engine.streaming_decoders if streaming else engine.decoders
        default = (choices[0] if choices else DEFAULT_ASR_DECODER) if streaming else DEFAULT_ASR_DECODER
        decoder = request.decoder or default
        if decoder not in choices:
            kind = "streaming " if streaming else ""
            raise ConfigError(f"decoder {decoder!r} is not available for {kind}recognition with ASR model "
                              f"{entry.name!r}; choose one of: {', '.join(choices)}")
        if not request.encoding:
            raise ConfigError("the recognition config has no audio encoding; set it to PCM16, FLOAT32 or OGG_OPUS")
        self_describing = request.encoding == OGG_OPUS or (not streaming and is_wav(audio))
        if request.sample_rate <= 0 and not self_describing:
            raise ConfigError("the recognition config has no sample rate; set sample_rate_hz to the rate of the "
                              "audio you send (e.g. 16000)")
        fmt = AudioFormat(request.encoding, request.sample_rate if request.sample_rate > 0 else engine.sample_rate)
        return entry, decoder, fmt

    async def recognize(self, request: RecognitionRequest, audio: bytes, method: str) -> RecognitionUpdate:
        """One whole utterance; concurrent calls to the same model and decoder share one batched pass."""
        entry, decoder, fmt = self._prepare_recognition(request, False, audio)
        engine = entry.engine
        with self.gate.session():
            started = time.perf_counter()
            samples = await asyncio.to_thread(decode_audio, audio, fmt, engine.sample_rate)
            seconds = samples.size / engine.sample_rate
            if samples.size == 0:
                raise AudioError("request audio", "the audio is empty (0 samples)")
            if seconds > engine.max_seconds:
                raise AudioError("request audio", f"the audio is too long ({seconds:.1f} s > {engine.max_seconds:.0f}"
                                 " s); use StreamingRecognize or send it in parts")
            transcript = await entry.batcher.run_batched(
                ("recognize", decoder), samples, lambda audios: engine.transcribe_batch(audios, decoder))
            self.metrics.observe_rtf(method, time.perf_counter() - started, seconds)
            return RecognitionUpdate(transcript, True, seconds)

    async def recognize_stream(self, request: RecognitionRequest, audio: AsyncIterator[bytes],
                               method: str) -> AsyncIterator[RecognitionUpdate]:
        """Interim updates (when asked for and the text changed) while audio arrives, then one final update."""
        entry, decoder, fmt = self._prepare_recognition(request, True)
        engine, batcher = entry.engine, entry.batcher
        with self.gate.session():
            started = time.perf_counter()
            reader = AudioDecoder(fmt, engine.sample_rate)
            session = await batcher.run(lambda: engine.open_stream(decoder))
            samples_seen, last_text = 0, ""
            async for piece in audio:
                samples = reader.push(piece)
                if not samples.size:
                    continue
                samples_seen += samples.size
                if samples_seen / engine.sample_rate > MAX_STREAM_SECONDS:
                    raise AudioError("stream", f"the stream is longer than {MAX_STREAM_SECONDS:.0f} s; start a new "
                                     "stream for the rest")
                transcript = await batcher.run_program(accept_audio_program(session, samples))
                if request.interim and transcript.text != last_text:
                    last_text = transcript.text
                    yield RecognitionUpdate(transcript, False, samples_seen / engine.sample_rate)
            tail = reader.finish()
            if tail.size:
                samples_seen += tail.size
                await batcher.run_program(accept_audio_program(session, tail))
            transcript = await batcher.run_program(finish_program(session))
            seconds = samples_seen / engine.sample_rate
            self.metrics.observe_rtf(method, time.perf_counter() - started, seconds)
            yield RecognitionUpdate(transcript, True, seconds)

    # ------------------------------------------------------------------ codec

    async def encode(self, audio: bytes, encoding: str, sample_rate: int, codebooks: int) -> np.ndarray:
        """Audio -> codes ``[K, F]`` with the server's codec."""
        entry = self.registry.codec_model()
        info = entry.engine.info
        if not encoding:
            raise ConfigError("no audio encoding given; set it to PCM16, FLOAT32 or OGG_OPUS")
        if sample_rate <= 0 and not (encoding == OGG_OPUS or is_wav(audio)):
            raise ConfigError("no sample rate given; set sample_rate_hz to the rate of the audio you send")
        fmt = AudioFormat(encoding, sample_rate if sample_rate > 0 else info.sample_rate)
        with self.gate.session():
            wav = await asyncio.to_thread(decode_audio, audio, fmt, info.sample_rate)
            if wav.size < info.hop_length:
                raise AudioError("request audio", f"the audio is shorter than one codec frame "
                                 f"({1000 / info.frame_rate:.0f} ms)")
            return await entry.batcher.run(lambda: entry.engine.encode(wav, codebooks or None))

    async def decode(self, codes: np.ndarray, encoding: str, sample_rate: int) -> tuple[bytes, AudioFormat, float]:
        """Codes ``[K, F]`` -> encoded audio, its format and duration in seconds."""
        entry = self.registry.codec_model()
        info = entry.engine.info
        fmt = AudioFormat(encoding or PCM16, sample_rate or info.sample_rate)
        with self.gate.session():
            wav = await entry.batcher.run(lambda: entry.engine.decode(codes))
            encoder = AudioEncoder(fmt, info.sample_rate)
            data = encoder.push(wav) + encoder.finish()
            return data, fmt, wav.size / info.sample_rate

    # ------------------------------------------------------------------ models

    def models(self) -> list[ModelDescription]:
        from tokenspeech.tts.pipeline import DECODERS

        described = []
        for index, entry in enumerate(self.registry.tts.values()):
            described.append(ModelDescription(entry.name, entry.kind, entry.engine.sample_rate,
                                              voices=tuple(entry.engine.voices), decoders=DECODERS,
                                              is_default=index == 0))
        for index, entry in enumerate(self.registry.asr.values()):
            described.append(ModelDescription(entry.name, entry.kind, entry.engine.sample_rate,
                                              decoders=entry.engine.decoders,
                                              streaming_decoders=entry.engine.streaming_decoders,
                                              is_default=index == 0))
        if self.registry.codec is not None:
            codec = self.registry.codec
            described.append(ModelDescription(codec.name, codec.kind, codec.engine.info.sample_rate, is_default=True))
        return described


async def _with_end(items: AsyncIterator[str]) -> AsyncIterator[str | None]:
    """``items`` followed by one ``None`` marking their end."""
    async for item in items:
        yield item
    yield None
