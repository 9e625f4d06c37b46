"""``tokenspeech.v1.Speech``: maps our protos onto :class:`SpeechService` and back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
import numpy as np

from tokenspeech.errors import ConfigError, TokenspeechError
from tokenspeech.serving.audio_format import FLOAT32, OGG_OPUS, PCM16, AudioFormat
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc
from tokenspeech.serving.service import (
    AudioOut,
    RecognitionRequest,
    RecognitionUpdate,
    SpeechService,
    SynthesisRequest,
)
from tokenspeech.serving.status import abort

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Speech"].full_name
_ENCODINGS = {pb.PCM16: PCM16, pb.FLOAT32: FLOAT32, pb.OGG_OPUS: OGG_OPUS}
_PROTO_ENCODINGS = {name: value for value, name in _ENCODINGS.items()}


def _encoding(value: int, default: str = "") -> str:
    if value == pb.AUDIO_ENCODING_UNSPECIFIED:
        return default
    if value not in _ENCODINGS:
        raise ConfigError(f"unknown audio encoding {value}; use PCM16, FLOAT32 or OGG_OPUS")
    return _ENCODINGS[value]


def _format(fmt: AudioFormat) -> pb.AudioFormat:
    return pb.AudioFormat(encoding=_PROTO_ENCODINGS[fmt.encoding], sample_rate_hz=fmt.sample_rate)


def synthesis_request(config: pb.SynthesisConfig) -> SynthesisRequest:
    fmt = config.audio_format
    return SynthesisRequest(model=config.model, voice=config.voice, decoder=config.decoder, steps=config.steps,
                            seed=config.seed, rate=config.rate, encoding=_encoding(fmt.encoding, PCM16),
                            sample_rate=fmt.sample_rate_hz,
                            guidance=config.guidance if config.HasField("guidance") else None,
                            fine_guidance=config.fine_guidance if config.HasField("fine_guidance") else None)


def recognition_request(config: pb.RecognitionConfig) -> RecognitionRequest:
    fmt = config.audio_format
    return RecognitionRequest(model=config.model, decoder=config.decoder, encoding=_encoding(fmt.encoding),
                              sample_rate=fmt.sample_rate_hz, interim=config.interim_results)


def _result(update: RecognitionUpdate) -> pb.RecognitionResult:
    words = [pb.WordInfo(word=w.word, start_seconds=w.start, end_seconds=w.end) for w in update.transcript.words]
    return pb.RecognitionResult(transcript=update.transcript.text, words=words, is_final=update.final,
                                audio_seconds=update.audio_seconds)


def _chunk(out: AudioOut) -> pb.SynthesizeChunk:
    return pb.SynthesizeChunk(audio=out.audio, audio_format=_format(out.format), sentence=out.sentence,
                              offset_seconds=out.offset_seconds, final=out.final)


async def _one(item: str) -> AsyncIterator[str]:
    yield item


async def _rest_of_text(requests: AsyncIterator[pb.StreamingSynthesizeRequest]) -> AsyncIterator[str]:
    async for request in requests:
        if request.WhichOneof("request") != "text":
            raise ConfigError("only the first StreamingSynthesize message may carry a config; send text after it")
        yield request.text


async def _rest_of_audio(requests: AsyncIterator[pb.StreamingRecognizeRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("request") != "audio":
            raise ConfigError("only the first StreamingRecognize message may carry a config; send audio after it")
        yield request.audio


async def _first(requests: AsyncIterator, kind: str, payload: str, rpc: str):
    """The config that must open a client stream."""
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("request") != "config":
        got = "nothing" if first is None else f"{payload} first"
        raise ConfigError(f"{rpc}: send a {kind} message first, then {payload} (got {got})")
    return first.config


class SpeechServicer(pb_grpc.SpeechServicer):
    def __init__(self, service: SpeechService) -> None:
        self.service = service

    async def Synthesize(self, request: pb.SynthesizeRequest,
                         context: grpc.aio.ServicerContext) -> pb.SynthesizeResponse:
        try:
            pieces, fmt, seconds = [], None, 0.0
            stream = self.service.synthesize(synthesis_request(request.config), _one(request.text), "Synthesize")
            async with aclosing(stream) as chunks:
                async for out in chunks:
                    pieces.append(out.audio)
                    fmt, seconds = out.format, seconds + out.seconds
            return pb.SynthesizeResponse(audio=b"".join(pieces), audio_format=_format(fmt),
                                         duration_seconds=seconds)
        except TokenspeechError as error:
            await abort(context, error)

    async def StreamingSynthesize(self, requests: AsyncIterator[pb.StreamingSynthesizeRequest],
                                  context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SynthesizeChunk]:
        try:
            config = await _first(requests, "config", "text", "StreamingSynthesize")
            stream = self.service.synthesize(synthesis_request(config), _rest_of_text(requests),
                                             "StreamingSynthesize")
            async with aclosing(stream) as chunks:
                async for out in chunks:
                    yield _chunk(out)
        except TokenspeechError as error:
            await abort(context, error)

    async def Recognize(self, request: pb.RecognizeRequest,
                        context: grpc.aio.ServicerContext) -> pb.RecognizeResponse:
        try:
            update = await self.service.recognize(recognition_request(request.config), request.audio, "Recognize")
            return pb.RecognizeResponse(result=_result(update))
        except TokenspeechError as error:
            await abort(context, error)

    async def StreamingRecognize(self, requests: AsyncIterator[pb.StreamingRecognizeRequest],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamingRecognizeResponse]:
        try:
            config = await _first(requests, "config", "audio", "StreamingRecognize")
            stream = self.service.recognize_stream(recognition_request(config), _rest_of_audio(requests),
                                                   "StreamingRecognize")
            async with aclosing(stream) as updates:
                async for update in updates:
                    yield pb.StreamingRecognizeResponse(result=_result(update))
        except TokenspeechError as error:
            await abort(context, error)

    async def Encode(self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext) -> pb.EncodeResponse:
        try:
            fmt = request.audio_format
            codes = await self.service.encode(request.audio, _encoding(fmt.encoding), fmt.sample_rate_hz,
                                              request.codebooks)
            info = self.service.registry.codec_model().engine.info
            return pb.EncodeResponse(codes=pb.Codes(codec=info.name, num_codebooks=codes.shape[0],
                                                    num_frames=codes.shape[1], values=codes.reshape(-1).tolist(),
                                                    frame_rate=info.frame_rate))
        except TokenspeechError as error:
            await abort(context, error)

    async def Decode(self, request: pb.DecodeRequest, context: grpc.aio.ServicerContext) -> pb.DecodeResponse:
        try:
            codes = self._codes(request.codes)
            fmt = request.audio_format
            audio, out_format, seconds = await self.service.decode(codes, _encoding(fmt.encoding, PCM16),
                                                                   fmt.sample_rate_hz)
            return pb.DecodeResponse(audio=audio, audio_format=_format(out_format), duration_seconds=seconds)
        except TokenspeechError as error:
            await abort(context, error)

    def _codes(self, codes: pb.Codes) -> np.ndarray:
        info = self.service.registry.codec_model().engine.info
        if codes.codec and codes.codec != info.name:
            raise ConfigError(f"these codes belong to codec {codes.codec!r}; this server decodes {info.name!r}")
        k, f = codes.num_codebooks, codes.num_frames
        if k < 1 or f < 1 or len(codes.values) != k * f:
            raise ConfigError(f"codes: num_codebooks ({k}) x num_frames ({f}) must be positive and equal the "
                              f"number of values ({len(codes.values)})")
        return np.asarray(codes.values, dtype=np.int64).reshape(k, f)

    async def ListModels(self, request: pb.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[
            pb.ModelInfo(name=m.name, kind=m.kind, voices=m.voices, decoders=m.decoders,
                         streaming_decoders=m.streaming_decoders, sample_rate_hz=m.sample_rate,
                         is_default=m.is_default)
            for m in self.service.models()])
