"""The native tokenspeech.v1 API end to end: an in-process server with tiny models and a real gRPC client."""

from __future__ import annotations

import io
import itertools

import grpc
import numpy as np
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from serving_harness import ASR_NAME, LONG_TEXT, PCM16_16K, TEXT, TTS_NAME, ServerThread, pcm16
from tiny_models import speech_like

from tokenspeech.serving.native import SERVICE_NAME
from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc
from tokenspeech.serving.riva import ASR_SERVICE_NAME, TTS_SERVICE_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> pb_grpc.SpeechStub:
    return pb_grpc.SpeechStub(server.channel())


def synth_stream(stub, config: pb.SynthesisConfig, *texts: str, **kwargs):
    requests = [pb.StreamingSynthesizeRequest(config=config)] + [pb.StreamingSynthesizeRequest(text=t) for t in texts]
    return stub.StreamingSynthesize(iter(requests), **kwargs)


def recognize_stream(stub, config: pb.RecognitionConfig, audio: bytes, piece: int = 6400):
    requests = [pb.StreamingRecognizeRequest(config=config)]
    requests += [pb.StreamingRecognizeRequest(audio=audio[i:i + piece]) for i in range(0, len(audio), piece)]
    return list(stub.StreamingRecognize(iter(requests)))


def expect_error(code: grpc.StatusCode, match: str, call, *args, **kwargs) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        result = call(*args, **kwargs)
        if not hasattr(result, "SerializeToString"):
            list(result)  # a response stream: the error comes while reading it
    assert raised.value.code() == code, raised.value.details()
    assert match in raised.value.details()


# ----------------------------------------------------------------------------- synthesis


def test_synthesize_returns_pcm16_of_the_stated_length(stub) -> None:
    response = stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(seed=3)))
    assert response.audio_format.encoding == pb.PCM16 and response.audio_format.sample_rate_hz == 16000
    samples = np.frombuffer(response.audio, dtype="<i2")
    assert samples.size > 0 and samples.size == round(response.duration_seconds * 16000)


def test_stream_arrives_in_chunks_and_equals_the_unary_audio(stub) -> None:
    config = pb.SynthesisConfig(decoder="semiar", seed=5, voice="espeak-us")
    unary = stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=config))
    chunks = list(synth_stream(stub, config, TEXT))
    assert len(chunks) > 2 and [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert [c.sentence for c in chunks] == sorted(c.sentence for c in chunks) and chunks[-1].sentence == 1
    assert b"".join(c.audio for c in chunks) == unary.audio
    offsets = [c.offset_seconds for c in chunks]
    assert offsets[0] == 0 and all(b > a for a, b in itertools.pairwise(offsets))


def test_text_streamed_in_pieces_is_spoken_sentence_by_sentence(stub) -> None:
    chunks = list(synth_stream(stub, pb.SynthesisConfig(), "Hello th", "ere. How are ", "you today? And", " bye"))
    assert chunks[-1].final and sum(c.final for c in chunks) == 1
    assert sorted({c.sentence for c in chunks}) == [0, 1, 2]
    assert sum(len(c.audio) for c in chunks) > 0


@pytest.mark.parametrize("decoder", ["nar", "semiar", "ar"])
def test_fixed_seed_gives_the_same_audio_for_every_decoder(stub, decoder: str) -> None:
    config = pb.SynthesisConfig(decoder=decoder, seed=11, steps=2)
    first = stub.Synthesize(pb.SynthesizeRequest(text="Good morning.", config=config))
    second = stub.Synthesize(pb.SynthesizeRequest(text="Good morning.", config=config))
    assert first.audio == second.audio and len(first.audio) > 0


def test_guidance_unset_means_the_decoders_default_and_zero_turns_it_off(stub) -> None:
    def say(**config) -> bytes:
        return stub.Synthesize(pb.SynthesizeRequest(text="Good morning.", config=pb.SynthesisConfig(
            seed=3, **config))).audio

    default, off, explicit = say(), say(guidance=0.0), say(guidance=2.0)  # nar: guidance 2 by default
    assert default == explicit and default != off
    semiar = say(decoder="semiar")  # semiar: only its fine pass is guided by default
    assert semiar == say(decoder="semiar", fine_guidance=2.0) != say(decoder="semiar", guidance=0.0)


def test_fine_guidance_is_a_request_option(stub) -> None:
    def say(**config) -> bytes:
        return stub.Synthesize(pb.SynthesizeRequest(text="Good morning.", config=pb.SynthesisConfig(
            seed=3, decoder="semiar", **config))).audio

    plain = say(guidance=0.0, fine_guidance=0.0)
    assert say(guidance=0.0) == plain  # an explicit guidance sets the fine pass too unless it is given
    assert say(guidance=0.0, fine_guidance=2.0) != plain


def test_float32_resampled_and_ogg_opus_outputs(stub) -> None:
    pcm = stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(seed=1)))
    f32 = stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(
        seed=1, audio_format=pb.AudioFormat(encoding=pb.FLOAT32, sample_rate_hz=22050))))
    assert f32.audio_format.sample_rate_hz == 22050
    samples = np.frombuffer(f32.audio, dtype="<f4")
    assert abs(samples.size - len(pcm.audio) // 2 * 22050 / 16000) <= 2
    opus = stub.Synthesize(pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(
        seed=1, audio_format=pb.AudioFormat(encoding=pb.OGG_OPUS, sample_rate_hz=48000))))
    decoded, rate = sf.read(io.BytesIO(opus.audio))
    assert rate == 48000 and abs(decoded.shape[0] / rate - opus.duration_seconds) < 0.05
    streamed = synth_stream(stub, pb.SynthesisConfig(decoder="semiar", audio_format=pb.AudioFormat(
        encoding=pb.OGG_OPUS, sample_rate_hz=16000)), LONG_TEXT[:200])
    decoded, rate = sf.read(io.BytesIO(b"".join(c.audio for c in streamed)))
    assert rate == 16000 and decoded.shape[0] > 0


# ----------------------------------------------------------------------------- recognition


def test_recognize_gives_text_with_word_times_inside_the_audio(stub) -> None:
    audio = speech_like(2.0)
    for decoder in ("ctc", "paraformer", "ar", "semiar"):
        config = pb.RecognitionConfig(model=ASR_NAME, decoder=decoder, audio_format=PCM16_16K)
        result = stub.Recognize(pb.RecognizeRequest(config=config, audio=pcm16(audio))).result
        assert result.is_final and result.audio_seconds == pytest.approx(2.0)
        assert isinstance(result.transcript, str)
        for word in result.words:
            assert 0 <= word.start_seconds <= word.end_seconds <= 2.0


def test_recognize_accepts_float32_resampled_wav_and_ogg_opus(stub) -> None:
    audio = speech_like(1.5, seed=2)
    reference = stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=pb.AudioFormat(
        encoding=pb.FLOAT32, sample_rate_hz=16000)), audio=audio.astype("<f4").tobytes())).result
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    wav = stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=pb.AudioFormat(
        encoding=pb.PCM16)), audio=buffer.getvalue())).result
    assert wav.audio_seconds == pytest.approx(1.5) and wav.transcript == reference.transcript
    buffer = io.BytesIO()
    sf.write(buffer, audio, 48000 // 3, format="OGG", subtype="OPUS")
    ogg = stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=pb.AudioFormat(
        encoding=pb.OGG_OPUS)), audio=buffer.getvalue())).result
    assert ogg.audio_seconds == pytest.approx(1.5, abs=0.05)
    at_8k = stub.Recognize(pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=pb.AudioFormat(
        encoding=pb.PCM16, sample_rate_hz=8000)), audio=pcm16(audio[::2]))).result
    assert at_8k.audio_seconds == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize("decoder", ["semiar", "ctc"])
def test_streaming_recognition_grows_interim_results_then_ends_with_the_final(stub, decoder: str) -> None:
    audio = pcm16(speech_like(2.5, seed=4))
    config = pb.RecognitionConfig(decoder=decoder, interim_results=True, audio_format=PCM16_16K)
    responses = recognize_stream(stub, config, audio, piece=3201)  # odd pieces: samples split across messages
    results = [r.result for r in responses]
    assert [r.is_final for r in results] == [False] * (len(results) - 1) + [True]
    texts = [r.transcript for r in results]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert results[-1].audio_seconds == pytest.approx(2.5)
    for word in results[-1].words:
        assert 0 <= word.start_seconds <= word.end_seconds <= 2.5
    quiet = recognize_stream(stub, pb.RecognitionConfig(decoder=decoder, audio_format=PCM16_16K), audio)
    assert len(quiet) == 1 and quiet[0].result.transcript == results[-1].transcript


# ----------------------------------------------------------------------------- codec and models


def test_encode_then_decode_round_trips_through_codec_tokens(stub) -> None:
    audio = pcm16(speech_like(1.0))
    encoded = stub.Encode(pb.EncodeRequest(audio=audio, audio_format=PCM16_16K, codebooks=2)).codes
    assert (encoded.codec, encoded.num_codebooks, encoded.num_frames) == ("tscodec", 2, 25)
    assert len(encoded.values) == 50 and encoded.frame_rate == 25
    decoded = stub.Decode(pb.DecodeRequest(codes=encoded))
    assert decoded.duration_seconds == pytest.approx(1.0) and len(decoded.audio) == 2 * 16000
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "num_codebooks", stub.Decode,
                 pb.DecodeRequest(codes=pb.Codes(num_codebooks=2, num_frames=3, values=[1, 2])))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "codes must be in", stub.Decode,
                 pb.DecodeRequest(codes=pb.Codes(num_codebooks=1, num_frames=2, values=[1, 999])))


def test_list_models_names_voices_and_decoders(stub) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {TTS_NAME, ASR_NAME, "tscodec"}
    assert list(models[TTS_NAME].voices) == ["joe", "espeak-us", "espeak-gb-f"]
    assert list(models[TTS_NAME].decoders) == ["nar", "semiar", "ar"]
    assert list(models[ASR_NAME].streaming_decoders) == ["ctc", "semiar"]  # the first is the default
    assert models[TTS_NAME].is_default and models[ASR_NAME].sample_rate_hz == 16000


def test_health_and_reflection_are_on(server: ServerThread) -> None:
    channel = server.channel()
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME, TTS_SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {SERVICE_NAME, TTS_SERVICE_NAME, ASR_SERVICE_NAME, "grpc.health.v1.Health"} <= services


# ----------------------------------------------------------------------------- errors


def test_bad_synthesis_requests_get_actionable_errors(stub) -> None:
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    say = stub.Synthesize
    expect_error(invalid, "empty", say, pb.SynthesizeRequest(text="  "))
    expect_error(invalid, "limit is 5000", say, pb.SynthesizeRequest(text="word " * 1200))
    expect_error(missing, "unknown TTS model 'nope'; this server has: tiny-tts", say,
                 pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(model="nope")))
    expect_error(missing, "it has: joe, espeak-us, espeak-gb-f", say,
                 pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(voice="alice")))
    expect_error(invalid, "choose one of: nar, semiar, ar", say,
                 pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(decoder="diffusion")))
    expect_error(invalid, "steps must be", say, pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(steps=999)))
    expect_error(invalid, "guidance must be in 0..10", say,
                 pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(guidance=-1.0)))
    expect_error(invalid, "fine_guidance must be in 0..10", say,
                 pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(fine_guidance=12.0)))
    expect_error(invalid, "Ogg-Opus works at", say, pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(
        audio_format=pb.AudioFormat(encoding=pb.OGG_OPUS, sample_rate_hz=22050))))
    expect_error(invalid, "give a rate in 8000..48000", say, pb.SynthesizeRequest(text=TEXT, config=pb.SynthesisConfig(
        audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=100))))
    expect_error(invalid, "send a config message first", stub.StreamingSynthesize,
                 iter([pb.StreamingSynthesizeRequest(text=TEXT)]))
    expect_error(invalid, "empty", synth_stream, stub, pb.SynthesisConfig())


def test_bad_recognition_requests_get_actionable_errors(stub) -> None:
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    audio = pcm16(speech_like(0.5))
    expect_error(invalid, "send a config message first, then audio", stub.StreamingRecognize,
                 iter([pb.StreamingRecognizeRequest(audio=audio)]))
    expect_error(missing, "unknown ASR model 'nope'", stub.Recognize, pb.RecognizeRequest(
        config=pb.RecognitionConfig(model="nope", audio_format=PCM16_16K), audio=audio))
    expect_error(invalid, "choose one of: ctc, semiar", recognize_stream, stub,
                 pb.RecognitionConfig(decoder="paraformer", audio_format=PCM16_16K), audio)
    expect_error(invalid, "no audio encoding", stub.Recognize,
                 pb.RecognizeRequest(config=pb.RecognitionConfig(), audio=audio))
    expect_error(invalid, "no sample rate", stub.Recognize, pb.RecognizeRequest(
        config=pb.RecognitionConfig(audio_format=pb.AudioFormat(encoding=pb.PCM16)), audio=audio))
    expect_error(invalid, "Hz is not supported", stub.Recognize, pb.RecognizeRequest(
        config=pb.RecognitionConfig(audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=96000)),
        audio=audio))
    expect_error(invalid, "not a whole number of pcm16 samples", stub.Recognize,
                 pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=PCM16_16K), audio=audio[:-1]))
    expect_error(invalid, "empty", stub.Recognize,
                 pb.RecognizeRequest(config=pb.RecognitionConfig(audio_format=PCM16_16K), audio=b""))
    expect_error(invalid, "too long", stub.Recognize, pb.RecognizeRequest(
        config=pb.RecognitionConfig(audio_format=PCM16_16K), audio=pcm16(np.zeros(16000 * 31))))
    expect_error(invalid, "unary Recognize call only", recognize_stream, stub,
                 pb.RecognitionConfig(audio_format=pb.AudioFormat(encoding=pb.OGG_OPUS, sample_rate_hz=16000)), audio)
    expect_error(invalid, "not readable as Ogg-Opus", stub.Recognize, pb.RecognizeRequest(
        config=pb.RecognitionConfig(audio_format=pb.AudioFormat(encoding=pb.OGG_OPUS)), audio=b"junk" * 100))
    expect_error(invalid, "NaN", stub.Recognize, pb.RecognizeRequest(config=pb.RecognitionConfig(
        audio_format=pb.AudioFormat(encoding=pb.FLOAT32, sample_rate_hz=16000)),
        audio=np.full(1600, np.nan, dtype="<f4").tobytes()))
