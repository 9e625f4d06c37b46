"""The Riva-compatible services, driven by the unmodified ``riva.client`` classes."""

from __future__ import annotations

import io
import wave

import grpc
import numpy as np
import pytest
import riva.client
import soundfile as sf
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_tts_pb2 as rtts
from serving_harness import ASR_NAME, TEXT, TTS_NAME, ServerThread
from tiny_models import speech_like

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def auth(server: ServerThread) -> riva.client.Auth:
    return riva.client.Auth(uri=server.target)


def wav_bytes(audio: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((audio * 32767).round().astype("<i2").tobytes())
    return buffer.getvalue()


def test_riva_tts_synthesize_and_online_give_the_same_pcm(auth: riva.client.Auth) -> None:
    tts = riva.client.SpeechSynthesisService(auth)
    options = {"decoder": "semiar", "seed": "4", "guidance": "1.5", "fine_guidance": "2"}
    offline = tts.synthesize(TEXT, voice_name="espeak-us", sample_rate_hz=16000, custom_configuration=options)
    assert len(offline.audio) > 0 and offline.meta.text == TEXT
    online = list(tts.synthesize_online(TEXT, voice_name="espeak-us", sample_rate_hz=16000,
                                        custom_configuration=options))
    assert len(online) > 1
    assert b"".join(r.audio for r in online) == offline.audio


def test_riva_tts_default_rate_22050_model_dot_voice_and_ogg_opus(auth: riva.client.Auth) -> None:
    tts = riva.client.SpeechSynthesisService(auth)
    native = tts.synthesize(TEXT, sample_rate_hz=16000)
    resampled = tts.synthesize(TEXT)  # the Riva client asks for 22050 Hz by default
    assert abs(len(resampled.audio) / 22050 - len(native.audio) / 16000) < 0.01
    named = tts.synthesize(TEXT, voice_name=f"{TTS_NAME}.joe", sample_rate_hz=16000)
    assert named.audio == native.audio
    opus = tts.synthesize(TEXT, encoding=riva.client.AudioEncoding.OGGOPUS, sample_rate_hz=24000)
    decoded, rate = sf.read(io.BytesIO(opus.audio))
    assert rate == 24000 and decoded.shape[0] > 0


def test_riva_tts_config_lists_models_and_voices(auth: riva.client.Auth) -> None:
    stub = riva.client.proto.riva_tts_pb2_grpc.RivaSpeechSynthesisStub(auth.channel)
    config = stub.GetRivaSynthesisConfig(rtts.RivaSynthesisConfigRequest())
    (model,) = config.model_config
    assert model.model_name == TTS_NAME and model.parameters["subvoices"] == "joe,espeak-us,espeak-gb-f"
    assert model.parameters["language_code"] == "en-US"


def test_riva_offline_recognize_reads_a_wav_file_with_its_header(auth: riva.client.Auth) -> None:
    asr = riva.client.ASRService(auth)
    audio = speech_like(2.0, seed=7)
    config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000,
                                           language_code="en-US", enable_word_time_offsets=True)
    response = asr.offline_recognize(wav_bytes(audio), config)
    (result,) = response.results
    assert result.audio_processed == pytest.approx(2.0)
    alternative = result.alternatives[0]
    assert isinstance(alternative.transcript, str)
    for word in alternative.words:
        assert 0 <= word.start_time <= word.end_time <= 2000


def test_riva_streaming_recognize_gives_interim_then_final(auth: riva.client.Auth) -> None:
    asr = riva.client.ASRService(auth)
    audio = wav_bytes(speech_like(2.5, seed=8))
    config = riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000,
                                             language_code="en-US", model=ASR_NAME, enable_word_time_offsets=True,
                                             custom_configuration={"decoder": "semiar"}),
        interim_results=True)
    chunks = [audio[i:i + 4000] for i in range(0, len(audio), 4000)]  # the first piece holds the WAV header
    responses = list(asr.streaming_response_generator(chunks, config))
    results = [r.results[0] for r in responses]
    assert results[-1].is_final and not any(r.is_final for r in results[:-1])
    assert results[-1].audio_processed == pytest.approx(2.5)
    offline = asr.offline_recognize(audio, riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, model=ASR_NAME,
        custom_configuration={"decoder": "semiar"}))
    assert isinstance(offline.results[0].alternatives[0].transcript, str)


def test_riva_asr_config_lists_models(auth: riva.client.Auth) -> None:
    stub = riva.client.proto.riva_asr_pb2_grpc.RivaSpeechRecognitionStub(auth.channel)
    (model,) = stub.GetRivaSpeechRecognitionConfig(rasr.RivaSpeechRecognitionConfigRequest()).model_config
    assert model.model_name == ASR_NAME and model.parameters["streaming_decoders"] == "ctc,semiar"  # default first


def test_riva_errors_are_actionable(auth: riva.client.Auth) -> None:
    tts, asr = riva.client.SpeechSynthesisService(auth), riva.client.ASRService(auth)
    cases = [
        (lambda: tts.synthesize(TEXT, encoding=riva.client.AudioEncoding.FLAC), grpc.StatusCode.INVALID_ARGUMENT,
         "use LINEAR_PCM or OGGOPUS"),
        (lambda: tts.synthesize(TEXT, voice_name="nobody"), grpc.StatusCode.NOT_FOUND, "it has: joe"),
        (lambda: tts.synthesize(TEXT, language_code="de-DE"), grpc.StatusCode.INVALID_ARGUMENT, "en-US"),
        (lambda: tts.synthesize(TEXT, custom_configuration={"speed": "2"}), grpc.StatusCode.INVALID_ARGUMENT,
         "this server reads: model, decoder"),
        (lambda: tts.synthesize(""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (lambda: asr.offline_recognize(b"\x00\x01" * 800, riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.MULAW, sample_rate_hertz=8000)), grpc.StatusCode.INVALID_ARGUMENT,
         "MULAW is not supported"),
        (lambda: asr.offline_recognize(b"\x00\x01" * 800, riva.client.RecognitionConfig(
            sample_rate_hertz=16000, model="nope")), grpc.StatusCode.NOT_FOUND, "unknown ASR model"),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == code and message in raised.value.details(), raised.value.details()
