"""NVIDIA Riva-compatible services over the same :class:`SpeechService`, so Riva clients work unchanged.

Uses the generated servicers shipped in the ``nvidia-riva-client`` package.
How Riva fields map onto ours:

- TTS ``voice_name``: ``VOICE`` of the default model or ``MODEL.VOICE``; empty = the default voice.
  ``custom_configuration`` may set ``model``, ``decoder``, ``steps``, ``seed``, ``rate``,
  ``guidance`` and ``fine_guidance``.
- ``encoding``: ``LINEAR_PCM`` (raw PCM16, a leading WAV header is skipped on input) or ``OGGOPUS``.
- ASR ``RecognitionConfig.model`` names our ASR model; ``custom_configuration`` may set ``decoder``.
  Word times (``enable_word_time_offsets``) are in milliseconds, as in Riva.
- ``SynthesizeOnline`` speaks each request's text in turn; ``StreamingRecognize`` sends
  interim results when ``interim_results`` is set and one final result when the client closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import grpc
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio
from riva.client.proto import riva_tts_pb2 as rtts
from riva.client.proto import riva_tts_pb2_grpc as rtts_grpc

from tokenspeech.errors import ConfigError, TokenspeechError
from tokenspeech.serving.audio_format import OGG_OPUS, PCM16
from tokenspeech.serving.service import RecognitionRequest, RecognitionUpdate, SpeechService, SynthesisRequest
from tokenspeech.serving.status import abort

TTS_SERVICE_NAME = rtts.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name
ASR_SERVICE_NAME = rasr.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
LANGUAGE = "en-US"
_ENCODINGS = {raudio.LINEAR_PCM: PCM16, raudio.OGGOPUS: OGG_OPUS}
_TTS_KEYS = ("model", "decoder", "steps", "seed", "rate", "guidance", "fine_guidance")
_ASR_KEYS = ("decoder",)


def _encoding(value: int, unspecified: str) -> str:
    if value == raudio.ENCODING_UNSPECIFIED:
        return unspecified
    if value not in _ENCODINGS:
        name = raudio.AudioEncoding.Name(value) if value in raudio.AudioEncoding.values() else str(value)
        raise ConfigError(f"audio encoding {name} is not supported here; use LINEAR_PCM or OGGOPUS")
    return _ENCODINGS[value]


def _custom(config: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown custom_configuration keys {', '.join(unknown)}; this server reads: "
                          f"{', '.join(allowed)}")
    return dict(config)


def _number(custom: dict[str, str], key: str, kind: type) -> int | float:
    try:
        return kind(custom.get(key, 0))
    except ValueError as error:
        raise ConfigError(f"custom_configuration {key}={custom[key]!r} is not a number") from error


def _optional_float(custom: dict[str, str], key: str) -> float | None:
    return float(_number(custom, key, float)) if key in custom else None


def _check_language(code: str) -> None:
    if code and not code.lower().startswith("en"):
        raise ConfigError(f"language {code!r} is not available; this server speaks and recognises {LANGUAGE}")


def synthesis_request(request: rtts.SynthesizeSpeechRequest) -> SynthesisRequest:
    _check_language(request.language_code)
    custom = _custom(request.custom_configuration, _TTS_KEYS)
    model, voice = custom.get("model", ""), request.voice_name
    if "." in voice and not model:
        model, voice = voice.split(".", 1)
    return SynthesisRequest(model=model, voice=voice, decoder=custom.get("decoder", ""),
                            steps=int(_number(custom, "steps", int)), seed=int(_number(custom, "seed", int)),
                            rate=float(_number(custom, "rate", float)),
                            encoding=_encoding(request.encoding, PCM16), sample_rate=request.sample_rate_hz,
                            guidance=_optional_float(custom, "guidance"),
                            fine_guidance=_optional_float(custom, "fine_guidance"))


def recognition_request(config: rasr.RecognitionConfig, interim: bool = False) -> RecognitionRequest:
    _check_language(config.language_code)
    if config.audio_channel_count > 1:
        raise ConfigError(f"{config.audio_channel_count} audio channels given; send mono audio")
    custom = _custom(config.custom_configuration, _ASR_KEYS)
    return RecognitionRequest(model=config.model, decoder=custom.get("decoder", ""),
                              encoding=_encoding(config.encoding, PCM16), sample_rate=config.sample_rate_hertz,
                              interim=interim)


def _alternative(update: RecognitionUpdate, words: bool) -> rasr.SpeechRecognitionAlternative:
    alternative = rasr.SpeechRecognitionAlternative(transcript=update.transcript.text, confidence=1.0,
                                                    language_code=[LANGUAGE])
    if words:
        alternative.words.extend(rasr.WordInfo(word=w.word, start_time=round(w.start * 1000),
                                               end_time=round(w.end * 1000), confidence=1.0)
                                 for w in update.transcript.words)
    return alternative


async def _one(text: str) -> AsyncIterator[str]:
    yield text


class RivaSynthesisServicer(rtts_grpc.RivaSpeechSynthesisServicer):
    def __init__(self, service: SpeechService) -> None:
        self.service = service

    async def Synthesize(self, request: rtts.SynthesizeSpeechRequest,
                         context: grpc.aio.ServicerContext) -> rtts.SynthesizeSpeechResponse:
        try:
            stream = self.service.synthesize(synthesis_request(request), _one(request.text), "RivaSynthesize")
            async with aclosing(stream) as chunks:
                audio = b"".join([out.audio async for out in chunks])
            return rtts.SynthesizeSpeechResponse(audio=audio, meta=rtts.SynthesizeSpeechResponseMetadata(
                text=request.text))
        except TokenspeechError as error:
            await abort(context, error)

    async def SynthesizeOnline(self, requests: AsyncIterator[rtts.SynthesizeSpeechRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[rtts.SynthesizeSpeechResponse]:
        try:
            async for request in requests:
                stream = self.service.synthesize(synthesis_request(request), _one(request.text),
                                                 "RivaSynthesizeOnline")
                async with aclosing(stream) as chunks:
                    async for out in chunks:
                        if out.audio:
                            yield rtts.SynthesizeSpeechResponse(audio=out.audio)
        except TokenspeechError as error:
            await abort(context, error)

    async def GetRivaSynthesisConfig(self, request: rtts.RivaSynthesisConfigRequest,
                                     context: grpc.aio.ServicerContext) -> rtts.RivaSynthesisConfigResponse:
        configs = []
        for model in self.service.models():
            if model.kind != "tts" or (request.model_name and request.model_name != model.name):
                continue
            configs.append(rtts.RivaSynthesisConfigResponse.Config(model_name=model.name, parameters={
                "language_code": LANGUAGE, "voice_name": model.name, "subvoices": ",".join(model.voices),
                "sample_rate_hz": str(model.sample_rate), "decoders": ",".join(model.decoders)}))
        return rtts.RivaSynthesisConfigResponse(model_config=configs)


class RivaRecognitionServicer(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, service: SpeechService) -> None:
        self.service = service

    async def Recognize(self, request: rasr.RecognizeRequest,
                        context: grpc.aio.ServicerContext) -> rasr.RecognizeResponse:
        try:
            update = await self.service.recognize(recognition_request(request.config), request.audio,
                                                  "RivaRecognize")
            result = rasr.SpeechRecognitionResult(
                alternatives=[_alternative(update, request.config.enable_word_time_offsets)],
                audio_processed=update.audio_seconds)
            return rasr.RecognizeResponse(results=[result])
        except TokenspeechError as error:
            await abort(context, error)

    async def StreamingRecognize(self, requests: AsyncIterator[rasr.StreamingRecognizeRequest],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[rasr.StreamingRecognizeResponse]:
        try:
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("streaming_request") != "streaming_config":
                raise ConfigError("StreamingRecognize: send the streaming_config first, then audio_content")
            streaming = first.streaming_config
            words = streaming.config.enable_word_time_offsets
            stream = self.service.recognize_stream(recognition_request(streaming.config, streaming.interim_results),
                                                   _audio(requests), "RivaStreamingRecognize")
            async with aclosing(stream) as updates:
                async for update in updates:
                    result = rasr.StreamingRecognitionResult(
                        alternatives=[_alternative(update, words and update.final)], is_final=update.final,
                        stability=1.0 if update.final else 0.5, audio_processed=update.audio_seconds)
                    yield rasr.StreamingRecognizeResponse(results=[result])
        except TokenspeechError as error:
            await abort(context, error)

    async def GetRivaSpeechRecognitionConfig(
            self, request: rasr.RivaSpeechRecognitionConfigRequest,
            context: grpc.aio.ServicerContext) -> rasr.RivaSpeechRecognitionConfigResponse:
        configs = []
        for model in self.service.models():
            if model.kind != "asr" or (request.model_name and request.model_name != model.name):
                continue
            configs.append(rasr.RivaSpeechRecognitionConfigResponse.Config(model_name=model.name, parameters={
                "language_code": LANGUAGE, "type": "online" if model.streaming_decoders else "offline",
                "decoders": ",".join(model.decoders), "streaming_decoders": ",".join(model.streaming_decoders),
                "sample_rate_hz": str(model.sample_rate)}))
        return rasr.RivaSpeechRecognitionConfigResponse(model_config=configs)


async def _audio(requests: AsyncIterator[rasr.StreamingRecognizeRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("streaming_request") == "streaming_config":
            raise ConfigError("StreamingRecognize: only the first message may carry a streaming_config")
        yield request.audio_content
