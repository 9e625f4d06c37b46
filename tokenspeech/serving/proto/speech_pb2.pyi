from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    PCM16: _ClassVar[AudioEncoding]
    FLOAT32: _ClassVar[AudioEncoding]
    OGG_OPUS: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
PCM16: AudioEncoding
FLOAT32: AudioEncoding
OGG_OPUS: AudioEncoding

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hz: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class SynthesisConfig(_message.Message):
    __slots__ = ("model", "voice", "decoder", "steps", "seed", "rate", "audio_format", "guidance", "fine_guidance")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    FINE_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    voice: str
    decoder: str
    steps: int
    seed: int
    rate: float
    audio_format: AudioFormat
    guidance: float
    fine_guidance: float
    def __init__(self, model: _Optional[str] = ..., voice: _Optional[str] = ..., decoder: _Optional[str] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., rate: _Optional[float] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., guidance: _Optional[float] = ..., fine_guidance: _Optional[float] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "audio_format", "duration_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    audio_format: AudioFormat
    duration_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class StreamingSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SynthesizeChunk(_message.Message):
    __slots__ = ("audio", "audio_format", "sentence", "offset_seconds", "final")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    audio_format: AudioFormat
    sentence: int
    offset_seconds: float
    final: bool
    def __init__(self, audio: _Optional[bytes] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., sentence: _Optional[int] = ..., offset_seconds: _Optional[float] = ..., final: _Optional[bool] = ...) -> None: ...

class RecognitionConfig(_message.Message):
    __slots__ = ("model", "decoder", "audio_format", "interim_results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    decoder: str
    audio_format: AudioFormat
    interim_results: bool
    def __init__(self, model: _Optional[str] = ..., decoder: _Optional[str] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., interim_results: _Optional[bool] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("word", "start_seconds", "end_seconds")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_seconds: float
    end_seconds: float
    def __init__(self, word: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class RecognitionResult(_message.Message):
    __slots__ = ("transcript", "words", "is_final", "audio_seconds")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    transcript: str
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    is_final: bool
    audio_seconds: float
    def __init__(self, transcript: _Optional[str] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ..., is_final: _Optional[bool] = ..., audio_seconds: _Optional[float] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: RecognitionResult
    def __init__(self, result: _Optional[_Union[RecognitionResult, _Mapping]] = ...) -> None: ...

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: RecognitionResult
    def __init__(self, result: _Optional[_Union[RecognitionResult, _Mapping]] = ...) -> None: ...

class Codes(_message.Message):
    __slots__ = ("codec", "num_codebooks", "num_frames", "values", "frame_rate")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    NUM_CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    codec: str
    num_codebooks: int
    num_frames: int
    values: _containers.RepeatedScalarFieldContainer[int]
    frame_rate: float
    def __init__(self, codec: _Optional[str] = ..., num_codebooks: _Optional[int] = ..., num_frames: _Optional[int] = ..., values: _Optional[_Iterable[int]] = ..., frame_rate: _Optional[float] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("audio", "audio_format", "codebooks")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    audio_format: AudioFormat
    codebooks: int
    def __init__(self, audio: _Optional[bytes] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., codebooks: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("codes",)
    CODES_FIELD_NUMBER: _ClassVar[int]
    codes: Codes
    def __init__(self, codes: _Optional[_Union[Codes, _Mapping]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("codes", "audio_format")
    CODES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    codes: Codes
    audio_format: AudioFormat
    def __init__(self, codes: _Optional[_Union[Codes, _Mapping]] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("audio", "audio_format", "duration_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    audio_format: AudioFormat
    duration_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., audio_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "voices", "decoders", "streaming_decoders", "sample_rate_hz", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DECODERS_FIELD_NUMBER: _ClassVar[int]
    STREAMING_DECODERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    voices: _containers.RepeatedScalarFieldContainer[str]
    decoders: _containers.RepeatedScalarFieldContainer[str]
    streaming_decoders: _containers.RepeatedScalarFieldContainer[str]
    sample_rate_hz: int
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., voices: _Optional[_Iterable[str]] = ..., decoders: _Optional[_Iterable[str]] = ..., streaming_decoders: _Optional[_Iterable[str]] = ..., sample_rate_hz: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
