"""The synthesis pipeline: text -> sentences -> phonemes -> codec tokens -> audio.

``Synthesizer.synthesize(text, options) -> AudioResult`` and
``Synthesizer.stream(text, options) -> Iterator[AudioChunk]``. Both normalise
the text, split it into sentences (long ones at commas or spaces), phonemise
each with espeak-ng, predict durations (scaled by ``rate``), generate codec
tokens with the chosen decoder and decode them with the codec.

Decoders (``SynthesisOptions.decoder``):

- ``nar``: masked iterative decoding of the whole sentence (``steps`` passes
  for the first codebook, then ``fine_passes`` for the rest).
- ``semiar``: blocks of ``block_frames`` frames (40 ms each), ``steps``
  passes per block, each block attending to the earlier ones through a KV
  cache; ``stream`` yields audio block by block (the low-latency path).
  By default one greedy first-codebook pass and a guided fine pass
  (``fine_guidance``): guidance where the words are decided, at one pass.
- ``ar``: the causal codec LM samples the first codebook frame by frame
  (KV cache, :class:`ARDecoder`), the masked model fills in the others.

``stream`` runs one streaming codec decoder across all sentences, so its
chunks join without seams; ``synthesize`` decodes all tokens at once, and
the two agree to float rounding for the same options. Every random draw
comes from generators seeded by ``(seed, sentence)`` (and block), so a
fixed seed gives identical audio.

``stream_program`` is ``stream`` as a program (:mod:`tokenspeech.decoding.calls`):
every network and codec pass is yielded as a call, so a server can run the
passes of many concurrent streams as batched passes; ``stream`` drives the
same program alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tokenspeech.codecs.base import AudioTokenizer
from tokenspeech.decoding import calls
from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.calls import Call, Program
from tokenspeech.decoding.masked import MASK, MaskedDecodingOptions, MaskedIterativeDecoder
from tokenspeech.decoding.sampling import SamplingOptions
from tokenspeech.decoding.semiar import SemiARDecoder, SemiARDecodingOptions
from tokenspeech.errors import ConfigError, ModelLoadError, TextError
from tokenspeech.text.normalize import normalize_text
from tokenspeech.tts.backend import Conditioning, TtsBackend, TtsModelInfo
from tokenspeech.tts.codec_steps import CodecSteps

logger = logging.getLogger(__name__)

DECODERS = ("nar", "semiar", "ar")
DEFAULT_DECODER = "nar"
# First-codebook passes (per block for semiar; unused by ar). semiar: one pass, since its fine pass is guided
# (below): 1 / 2 / 3 passes gave judge WER 9.1 / 9.1 / 8.6 % on 200 dev sentences at CPU RTF 0.072 / 0.084 / 0.108,
# and 8.0 / - / 7.5 % on 200 test ones at 0.072 / - / 0.121 (docs/tts.md, session 19); the old default, 3 unguided
# passes, gave 11.2 % (dev) and 10.1 % (test) at 0.088.
DEFAULT_STEPS = {"nar": 3, "semiar": 1, "ar": 1}
# Classifier-free guidance scale per decoder. nar: 3 guided passes cost what 6 unguided ones did (RTF 0.040 vs
# 0.038) and cut judge WER 10.9 -> 8.6 % (60 test sentences) and 15.1 -> 12.9 % (30 others; docs/tts.md, session 6).
# ar: guidance applies to its one masked fine pass (+11 % CPU): 12.9 -> 10.8 % and 16.1 -> 15.5 % on the same sets.
# semiar's first-codebook passes stay unguided: guiding every pass gave 11.9 -> 8.6 % but cost 1.5x CPU, and 16 served
# streams fell from 144/144 to 100/112 faster than real time (docs/tts.md, session 8); its fine pass is guided below.
DEFAULT_GUIDANCE = {"nar": 2.0, "semiar": 0.0, "ar": 2.0}
# Guidance of the fine pass (codebooks 2..K from codebook 1) apart from the first codebook's passes; None = as
# DEFAULT_GUIDANCE. semiar guides its fine pass alone: with 3 first-codebook passes that is one pass more per block
# for judge WER 11.2 -> 8.6 % on 200 dev sentences and 10.1 -> 7.5 % on 200 test ones, where guiding every pass gave
# 8.9 % on dev at twice the passes (docs/tts.md, session 19); most words are lost where codebook 2 is predicted.
DEFAULT_FINE_GUIDANCE: dict[str, float | None] = {"nar": None, "semiar": 2.0, "ar": None}
# First-codebook sampling temperature per decoder (0 = greedy). semiar: greedy gave judge WER 14.1 -> 11.8 % on 60 dev
# sentences and 15.4 -> 10.3 % on 60 test sentences against 0.8, at less CPU (docs/tts.md, session 10); nar (10.0 /
# 10.1 / 10.1 % at 0.8 / 0.4 / 0 on dev) and ar (11.1 / 10.2 / 10.4 %) were flat within the judge's noise.
DEFAULT_TEMPERATURE = {"nar": 0.8, "semiar": 0.0, "ar": 0.8}
MAX_TEXT_CHARS = 5000  # per request; longer texts must be sent as several requests
MAX_SENTENCE_CHARS = 300  # longer sentences are cut at a comma or space (keeps each under ~20 s)
MAX_STEPS = 64
RATE_RANGE = (0.5, 2.0)
MAX_BLOCK_FRAMES = 64


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-request options; checked by :func:`verify_options` (the one validation point)."""

    voice: str = "joe"
    decoder: str = DEFAULT_DECODER  # nar | semiar | ar
    steps: int | None = None  # first-codebook passes (per block for semiar); None = decoder default
    rate: float = 1.0  # speaking rate: 2.0 = twice as fast, 0.5 = half as fast
    seed: int = 0
    temperature: float | None = None  # first codebook sampling (AR and masked); 0 = greedy; None = DEFAULT_TEMPERATURE
    top_k: int = 50  # 0 = no cut
    guidance: float | None = None  # classifier-free guidance of the masked passes; 0 = off; None = DEFAULT_GUIDANCE
    fine_guidance: float | None = None  # guidance of the fine pass alone; None = DEFAULT_FINE_GUIDANCE, else guidance
    block_frames: int = 16  # semiar block size in 40 ms frames (640 ms: half the per-block overhead of 8)
    coarse_steps: tuple[int, ...] = ()  # passes for codebooks 2, 3, ... unmasked iteratively like the first
    fine_passes: int = 1  # passes for the codebooks after those (nar, semiar, ar)

    @property
    def resolved_steps(self) -> int:
        return DEFAULT_STEPS[self.decoder] if self.steps is None else self.steps

    @property
    def resolved_guidance(self) -> float:
        return DEFAULT_GUIDANCE[self.decoder] if self.guidance is None else self.guidance

    @property
    def resolved_fine_guidance(self) -> float:
        if self.fine_guidance is not None:
            return self.fine_guidance
        default = DEFAULT_FINE_GUIDANCE[self.decoder]
        return self.resolved_guidance if default is None or self.guidance is not None else default

    @property
    def resolved_temperature(self) -> float:
        return DEFAULT_TEMPERATURE[self.decoder] if self.temperature is None else self.temperature


def verify_options(options: SynthesisOptions, voices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming the valid choices when ``options`` cannot be used with these voices."""
    if options.voice not in voices:
        raise ConfigError(f"unknown voice {options.voice!r}; this model has: {', '.join(voices)}")
    if options.decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {options.decoder!r}; choose one of: {', '.join(DECODERS)}")
    checks = [
        (options.steps is None or 1 <= options.steps <= MAX_STEPS, f"steps must be 1..{MAX_STEPS}"),
        (RATE_RANGE[0] <= options.rate <= RATE_RANGE[1], f"rate must be in {RATE_RANGE[0]}..{RATE_RANGE[1]}"),
        (isinstance(options.seed, int) and options.seed >= 0, "seed must be a non-negative integer"),
        (options.temperature is None or 0.0 <= options.temperature <= 2.0, "temperature must be in 0..2"),
        (options.top_k >= 0, "top_k must be >= 0"),
        (options.guidance is None or 0.0 <= options.guidance <= 10.0, "guidance must be in 0..10"),
        (options.fine_guidance is None or 0.0 <= options.fine_guidance <= 10.0, "fine_guidance must be in 0..10"),
        (1 <= options.block_frames <= MAX_BLOCK_FRAMES, f"block_frames must be 1..{MAX_BLOCK_FRAMES}"),
        (options.fine_passes >= 1, "fine_passes must be >= 1"),
        (all(1 <= int(s) <= MAX_STEPS for s in options.coarse_steps), f"coarse_steps entries must be 1..{MAX_STEPS}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


@dataclass(frozen=True)
class Sentence:
    """One unit of synthesis: its text, IPA phonemes and phoneme ids."""

    text: str
    phonemes: str
    ids: np.ndarray  # [N] int64


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the output: ``audio [T] float32`` in [-1, 1]."""

    audio: np.ndarray
    sample_rate: int
    sentence: int  # index of the sentence it belongs to
    frames: int  # codec frames it holds
    final: bool  # the last chunk of the request

    @property
    def pcm16(self) -> bytes:
        """Little-endian signed 16-bit samples."""
        return to_pcm16(self.audio)


@dataclass(frozen=True)
class SentenceResult:
    text: str
    phonemes: str
    frames: int
    durations: np.ndarray  # [N] frames per phoneme


@dataclass(frozen=True)
class AudioResult:
    """The whole synthesis: ``audio [T] float32`` plus what was said and how long each part took."""

    audio: np.ndarray
    sample_rate: int
    sentences: tuple[SentenceResult, ...]
    options: SynthesisOptions
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, tokens, codec

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / self.sample_rate


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of normalised ``text``; pieces longer than ``max_chars`` are cut at the last comma, else space."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(", ", 0, max_chars)
            cut = cut + 1 if cut > 0 else sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


class _Strategy(Protocol):
    def blocks(self, backend: TtsBackend, condition: Conditioning, options: SynthesisOptions,
               seed: int) -> Program[None]:
        """A program (:mod:`tokenspeech.decoding.calls`) whose outputs are the token blocks ``[K, S]`` of one
        sentence, in order, covering ``condition.frames`` frames."""
        ...


def _sampling(options: SynthesisOptions) -> SamplingOptions:
    """First-codebook sampling of every decoder."""
    return SamplingOptions(temperature=options.resolved_temperature, top_k=options.top_k)


def _masked_options(options: SynthesisOptions, seed: int) -> MaskedDecodingOptions:
    return MaskedDecodingOptions(steps=options.resolved_steps, coarse_steps=tuple(options.coarse_steps),
                                 fine_passes=options.fine_passes,
                                 sampling=_sampling(options), guidance=options.resolved_guidance,
                                 fine_guidance=options.resolved_fine_guidance, seed=seed)


def fill_masked_tokens(backend: TtsBackend, condition: Conditioning, tokens: np.ndarray,
                       options: SynthesisOptions, seed: int) -> Program[np.ndarray]:
    """A program returning ``tokens [1, K, F]`` with every ``MASK`` filled by the masked transformer.

    The NAR decoder from all-``MASK``; the AR decoder after its first
    codebook; bench/tts_oracle.py with codebooks taken from a recording.
    """
    model = backend.masked()
    filled, _ = yield from MaskedIterativeDecoder(_masked_options(options, seed)).program(
        model, model.prepare(condition.cond), tokens)
    return filled


class _Nar:
    def blocks(self, backend: TtsBackend, condition: Conditioning, options: SynthesisOptions,
               seed: int) -> Program[None]:
        tokens = np.full((1, backend.num_codebooks, condition.frames), MASK, dtype=np.int64)
        tokens = yield from fill_masked_tokens(backend, condition, tokens, options, seed)
        yield tokens[0]


class _SemiAR:
    def blocks(self, backend: TtsBackend, condition: Conditioning, options: SynthesisOptions,
               seed: int) -> Program[None]:
        model = backend.blocks()
        masked = _masked_options(options, seed)
        decoder = SemiARDecoder(SemiARDecodingOptions(options.block_frames, masked))
        state = model.prepare(condition.cond, guidance=masked.uses_guidance)
        blocks = calls.Outputs(decoder.stream(model, state, 1, backend.num_codebooks, condition.frames))
        while (block := (yield from blocks.next())) is not calls.END:
            yield block[0]


class _AR:
    def blocks(self, backend: TtsBackend, condition: Conditioning, options: SynthesisOptions,
               seed: int) -> Program[None]:
        step_model = backend.ar()
        ar_options = ARDecodingOptions(max_length=condition.frames, eos_id=step_model.bos_id, seed=seed,
                                       sampling=_sampling(options))
        first = yield from calls.collect(ARDecoder(ar_options).stream(step_model, step_model.prepare(condition.cond),
                                                                      np.array([step_model.bos_id])))
        tokens = np.full((1, backend.num_codebooks, condition.frames), MASK, dtype=np.int64)
        tokens[0, 0] = np.concatenate(first)
        tokens = yield from fill_masked_tokens(backend, condition, tokens, options, seed)
        yield tokens[0]


STRATEGIES: dict[str, _Strategy] = {"nar": _Nar(), "semiar": _SemiAR(), "ar": _AR()}


def sentence_seed(seed: int, index: int) -> int:
    """The seed of sentence ``index`` of a request with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class Synthesizer:
    """One loaded TTS model + codec. Holds no per-request state: every call carries its own decoder and codec state."""

    def __init__(self, bundle: TtsModelInfo, codec: AudioTokenizer,
                 phonemizer: Callable[[str], str] | None = None, backend: TtsBackend | None = None) -> None:
        """``backend`` runs the networks (default: PyTorch over ``bundle.model``; ONNX: :mod:`tokenspeech.runtime`).

        ``codec`` takes and returns NumPy or torch arrays; the pipeline hands it NumPy.
        """
        info = codec.info
        if (info.frame_rate != bundle.codec.frame_rate or info.codebook_size != bundle.codec.codebook_size
                or info.num_codebooks < bundle.codebooks):
            raise ModelLoadError(f"the TTS model was trained on {bundle.codec.name} tokens ({bundle.codebooks} x "
                                 f"{bundle.codec.codebook_size} codes at {bundle.codec.frame_rate:g} Hz), but the codec "
                                 f"is {info.name} ({info.num_codebooks} x {info.codebook_size} at {info.frame_rate:g} Hz)")
        self.bundle = bundle
        self.codec = codec
        self.codec_steps = CodecSteps(codec)
        self.backend = backend if backend is not None else _torch_backend(bundle)
        if phonemizer is None:
            from tokenspeech.text.g2p import EspeakPhonemizer

            phonemizer = EspeakPhonemizer(bundle.g2p_language).phonemize
        self.phonemize = phonemizer

    @classmethod
    def load(cls, model: str | Path | None = None, codec: str | Path | None = None,
             precision: str = "fp32") -> Synthesizer:
        """The TTS model at ``model`` (default: shipped) with the codec its card names (at ``codec`` or shipped).

        ``precision`` (``fp32``, ``bf16`` or ``auto``) is that of both
        networks' large matrix products (:mod:`tokenspeech.models.precision`).
        """
        from tokenspeech.codecs.native import NAME, load_native_codec
        from tokenspeech.models.precision import resolve_precision, set_precision
        from tokenspeech.tts.model_io import load_tts_model

        resolved = resolve_precision(precision)  # bad names fail before the weights load
        bundle = load_tts_model(model)
        if bundle.codec.name != NAME:
            raise ModelLoadError(f"the TTS model needs the {bundle.codec.name!r} codec; only {NAME!r} can be "
                                 "loaded by path here")
        native = load_native_codec(Path(codec) if codec is not None else None)
        set_precision(bundle.model, resolved)
        set_precision(native.model, resolved)
        return cls(bundle, native)

    @property
    def voices(self) -> tuple[str, ...]:
        return self.bundle.voices

    @property
    def sample_rate(self) -> int:
        return self.codec.info.sample_rate

    def sentences(self, text: str) -> list[Sentence]:
        """Normalise, split and phonemise ``text``; raises :class:`TextError` for empty or over-long text."""
        if not isinstance(text, str) or not text.strip():
            raise TextError("the text is empty; give at least one word to speak")
        if len(text) > MAX_TEXT_CHARS:
            raise TextError(f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS} per request, "
                            "so send it in several parts")
        result = []
        for piece in split_sentences(normalize_text(text)):
            try:
                phonemes = self.phonemize(piece)
            except TextError:
                continue  # e.g. a stray punctuation mark between sentences
            result.append(Sentence(piece, phonemes, np.asarray(self.bundle.phonemes.encode(phonemes),
                                                               dtype=np.int64)))
        if not result:
            raise TextError(f"nothing speakable in {text[:60]!r}")
        return result

    def _sentence_tokens(self, sentences: list[Sentence], options: SynthesisOptions,
                         timings: dict[str, float]) -> Program[None]:
        """Outputs ``(sentence index, its record, token block [K, S], last block of the request)`` in order."""
        voice = self.voices.index(options.voice)
        strategy = STRATEGIES[options.decoder]
        timings.setdefault("tokens", 0.0)
        for index, sentence in enumerate(sentences):
            started = time.perf_counter()
            condition = yield Call(self.backend.condition, (sentence.ids, voice, options.rate))
            record = SentenceResult(sentence.text, sentence.phonemes, condition.frames, condition.durations)
            blocks = calls.Outputs(strategy.blocks(self.backend, condition, options,
                                                   sentence_seed(options.seed, index)))
            done = 0
            while (block := (yield from blocks.next())) is not calls.END:
                done += block.shape[1]
                timings["tokens"] += time.perf_counter() - started
                yield index, record, block, index == len(sentences) - 1 and done == condition.frames
                started = time.perf_counter()

    def synthesize(self, text: str, options: SynthesisOptions = SynthesisOptions()) -> AudioResult:
        """All of ``text`` as one waveform (codec decoded once, offline)."""
        verify_options(options, self.voices)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        sentences = self.sentences(text)
        timings["text"] = time.perf_counter() - started
        records: dict[int, SentenceResult] = {}
        blocks = []
        for index, record, block, _ in calls.outputs(self._sentence_tokens(sentences, options, timings)):
            records[index] = record
            blocks.append(block)
        started = time.perf_counter()
        codes = np.concatenate(blocks, axis=1)[None]
        audio = audio_numpy(self.codec.decode(codes))[0, 0]
        timings["codec"] = time.perf_counter() - started
        return AudioResult(audio, self.sample_rate, tuple(records[i] for i in sorted(records)), options, timings)

    def stream(self, text: str, options: SynthesisOptions = SynthesisOptions()) -> Iterator[AudioChunk]:
        """Audio chunks as soon as their tokens exist (per block for ``semiar``, per sentence otherwise).

        Text errors and option errors are raised before the first chunk.
        """
        return calls.outputs(self.stream_program(text, options))

    def stream_program(self, text: str, options: SynthesisOptions = SynthesisOptions()) -> Program[None]:
        """:meth:`stream` as a program (:mod:`tokenspeech.decoding.calls`) whose outputs are the chunks.

        It yields every model pass as a :class:`Call`, so a batching driver
        (the server's batcher) can run the passes of many streams together.
        Text errors and option errors are raised here, before the program starts.
        """
        verify_options(options, self.voices)
        sentences = self.sentences(text)
        return self._stream(sentences, options)

    def _stream(self, sentences: list[Sentence], options: SynthesisOptions) -> Program[None]:
        state = self.codec.init_decode_state(1)
        tokens = calls.Outputs(self._sentence_tokens(sentences, options, {}))
        while (item := (yield from tokens.next())) is not calls.END:
            index, _, block, final = item
            audio, state = yield Call(self.codec_steps.decode_step, (np.ascontiguousarray(block[None]), state))
            yield AudioChunk(audio_numpy(audio)[0, 0], self.sample_rate, index, block.shape[1], final)


def _torch_backend(bundle: Any) -> TtsBackend:
    from tokenspeech.tts.torch_backend import TorchTtsBackend

    return TorchTtsBackend(bundle.model)


def audio_numpy(array: Any) -> np.ndarray:
    """float32 NumPy from a codec output (a NumPy array, or a torch tensor without importing torch here)."""
    if hasattr(array, "detach"):
        return array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float32)
