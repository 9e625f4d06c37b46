"""The recognition pipeline over any backend: audio -> log-mel -> encoder -> a decoder -> text + word times.

Torch-free. :class:`AsrRecognizer` runs one decoder (``ctc | paraformer |
ar | semiar``) over an :class:`AsrBackend` (PyTorch modules:
:class:`tokenspeech.asr.torch_backend.TorchAsrBackend`; ONNX Runtime
sessions: :class:`tokenspeech.runtime.asr.OnnxAsrBackend`). Everything
between the networks - CTC search, CIF firing, AR and semi-AR decoding, word
times - is the NumPy code of :mod:`tokenspeech.decoding`, shared by both.

A batch is padded, the encoder runs once for the whole batch, then each
utterance is decoded. :class:`StreamingSession` is the per-stream handle the
server uses: ``accept_audio(samples) -> interim Transcript`` and
``finish() -> final``.

``ar`` runs joint CTC/attention beam search (:mod:`tokenspeech.decoding.joint_ctc`):
the CTC head keeps the attention decoder from skipping or repeating phrases.
A character LM (:mod:`.lm`) joins the search of ``ctc``, ``ar`` and ``paraformer`` (a beam search
over its positions after the one parallel pass, :mod:`tokenspeech.decoding.position_lm`) when given.

Word times come from the alignment the decoder has: CTC frame spans (``ctc``;
``ar`` aligns its tokens with the CTC head) or CIF firing positions
(``paraformer``, ``semiar``); one encoder frame is 40 ms.

Axes: B batch, M mel bands, F feature frames, T encoder frames, N tokens, D dim, V vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tokenspeech.asr.base import DECODERS, FRAME_SECONDS, Transcript, WordTiming
from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.calls import Call, Program, run
from tokenspeech.decoding.char_lm import KIND as CHAR_LM_KIND
from tokenspeech.decoding.cif import CifOutput, cif_fire
from tokenspeech.decoding.joint_ctc import CtcPrefixScorer, JointCtcAttentionDecoder, JointDecodingOptions
from tokenspeech.decoding.ctc import (
    CtcBeamOptions,
    CtcPath,
    CtcPrefixBeam,
    TokenLM,
    ctc_align,
    ctc_greedy,
    ctc_prefix_beam_search,
)
from tokenspeech.decoding.position_lm import PositionBeamOptions, PositionPath, position_beam_search
from tokenspeech.decoding.streaming_asr import AudioFramer, CtcStreamer, SemiARStreamer, StreamingHypothesis
from tokenspeech.decoding.word_lm import KIND as WORD_LM_KIND
from tokenspeech.decoding.words import word_spans
from tokenspeech.errors import AudioError, ConfigError
from tokenspeech.features import MelConfig
from tokenspeech.text.vocab import Vocabulary

logger = logging.getLogger(__name__)

# CTC beam search with a language model: 16 prefixes, the 8 best characters of a frame, frames more than
# 99.9 % blank skipped. On 60 test utterances (shipped ASR, 6-gram LM): beam 16 40.3 % WER, 12 42.5 %, 8 44.7 %.
LM_BEAM = 16
LM_TOKEN_BEAM = 8
LM_BLANK_SKIP = 0.999
# Joint CTC/attention beam search (``ar``). On 20 test + 20 held-out utterances (shipped ASR, step 3,300):
# attention alone, greedy 117.9 / 136.7 % WER (it loops); beam 4 with CTC weight 0.3: 47.7 / 67.4 %; with the
# LM (0.5, length bonus 0.5, CTC weight 0.5): 37.8 / 52.4 %. See docs/asr.md.
AR_BEAM = 4
AR_CTC_WEIGHT = 0.5
# Paraformer with the LM: a beam over its positions after the parallel pass (see decoding/position_lm.py).
PARAFORMER_BEAM = 8
# ... with a penalty on the space character (log-probability units): the LM otherwise splits words. On 150 dev
# clips: penalty 0 45.5 % WER, 1 43.6 %, 2 42.9 %, 3 46.0 %, 4 58.6 %.
PARAFORMER_SPACE_PENALTY = 2.0
# ... and the CTC head's prefix scores joined in, as for ar (0: off).
PARAFORMER_CTC_WEIGHT = 0.5
# ... and up to this many positions left empty (CIF firing once too often inside a word), each costing the
# penalty below. On 150 dev clips: no skips 37.9 % WER; 2 skips at penalty 0/1/2/4: 32.3/32.1/32.0/31.9 %;
# at penalty 4, 1 skip 34.4 %, 3 skips 30.4 % (session 12). Each skip count keeps its own beam, so the search
# costs about (1 + max_skips) times the CTC prefix work of no skips. With the CTC window below (session 13,
# bench/paraformer_search.py, window 8): 2 / 3 / 4 / 6 / 8 skips 31.9 / 30.4 / 29.6 / 28.8 / 28.8 % at search
# CPU RTF 0.022 / 0.024 / 0.029 / 0.057 / 0.052.
PARAFORMER_MAX_SKIPS = 4
PARAFORMER_SKIP_PENALTY = 4.0
# ... with CTC placing each position's token only within this many frames (40 ms) of the frames CIF integrated
# for that position (None: anywhere). On 150 dev clips at 2 skips: whole utterance 31.94 % WER, search CPU
# 31.7 s; window 16 / 8: the same 150 hypotheses, 13.6 / 12.0 s; 4: 31.99 %, 10.1 s; 2: 32.21 %, 9.2 s.
PARAFORMER_CTC_WINDOW: int | None = 8
LM_DECODERS = ("ctc", "ar", "paraformer")  # the decoders whose search takes a character LM
# (lm_weight, length_bonus) of each decoder's search by the kind of LM: the character 6-gram (ctc: session 1,
# ar: session 5, paraformer: session 10) or the word trigram read through its lexicon (session 17, 150 dev clips;
# docs/asr.md). Paraformer has no length bonus: CIF fixes the length.
LM_SETTINGS: dict[str, dict[str, tuple[float, float]]] = {
    CHAR_LM_KIND: {"ctc": (0.8, 1.5), "ar": (0.5, 0.5), "paraformer": (0.5, 0.0)},
    WORD_LM_KIND: {"ctc": (1.0, 3.0), "ar": (0.5, 1.0), "paraformer": (0.7, 0.0)},
}


@dataclass(frozen=True)
class RecognizerOptions:
    """How to decode. ``chunk`` (encoder frames of 40 ms) applies to ``semiar`` and streaming."""

    decoder: str = "ctc"
    beam_size: int | None = None  # CTC prefix / AR / Paraformer position beam; None: ctc 16 with an LM (else
    # greedy), ar 4, paraformer 8 with an LM (else greedy)
    # with a language model: score = acoustic + lm_weight * log p_lm + length_bonus * chars; None: the
    # default of the decoder and the kind of LM (LM_SETTINGS)
    lm_weight: float | None = None
    length_bonus: float | None = None
    # ar, paraformer: weight of the CTC prefix score against the decoder's (0: the decoder alone); None: the
    # decoder's default (ar 0.5, paraformer PARAFORMER_CTC_WEIGHT)
    ctc_weight: float | None = None
    chunk: int = 6  # 240 ms blocks: 285 ms algorithmic latency (target <= 320 ms)
    left_chunks: int = 0  # 0 = all left context
    max_seconds: float = 30.0
    max_tokens_per_second: float = 40.0  # AR length cap
    tail_threshold: float = 0.5  # CIF: leftover weight that still fires a last token

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if (self.beam_size is not None and self.beam_size < 1) or self.chunk < 1 or self.left_chunks < 0:
            raise ConfigError("beam_size and chunk must be >= 1, left_chunks >= 0")
        if self.lm_weight is not None and self.lm_weight < 0:
            raise ConfigError("lm_weight must be >= 0")
        if self.ctc_weight is not None and not 0 <= self.ctc_weight <= 1:
            raise ConfigError("ctc_weight must be in [0, 1]")
        if self.max_seconds <= 0 or self.max_tokens_per_second <= 0:
            raise ConfigError("max_seconds and max_tokens_per_second must be > 0")
        if not 0 < self.tail_threshold <= 1:
            raise ConfigError("tail_threshold must be in (0, 1]")

    def beam(self, with_lm: bool = False) -> int:
        """The beam size to use: the option, else the decoder's default."""
        if self.beam_size is not None:
            return self.beam_size
        if self.decoder == "ar":
            return AR_BEAM
        if not with_lm:
            return 1
        return {"ctc": LM_BEAM, "paraformer": PARAFORMER_BEAM}.get(self.decoder, 1)

    def joint_ctc_weight(self) -> float:
        """The weight of the CTC prefix score in the ar and paraformer searches: the option, else the default."""
        if self.ctc_weight is not None:
            return self.ctc_weight
        return {"ar": AR_CTC_WEIGHT, "paraformer": PARAFORMER_CTC_WEIGHT}.get(self.decoder, 0.0)

    def lm_settings(self, lm_kind: str = CHAR_LM_KIND) -> tuple[float, float]:
        """``(lm_weight, length_bonus)`` of this decoder's search with a language model of ``lm_kind``
        (its ``kind``): the options, else the defaults measured for that kind (:data:`LM_SETTINGS`)."""
        settings = LM_SETTINGS.get(lm_kind, LM_SETTINGS[CHAR_LM_KIND])
        weight, bonus = settings.get(self.decoder, settings["ctc"])
        return (weight if self.lm_weight is None else self.lm_weight,
                bonus if self.length_bonus is None else self.length_bonus)


@dataclass(frozen=True)
class Encoded:
    """Encoder output and its frame-wise heads, NumPy."""

    hidden: np.ndarray  # [B, T, D] float32
    lengths: np.ndarray  # [B] int64
    ctc_log_probs: np.ndarray  # [B, T, V] float32
    alphas: np.ndarray | None  # [B, T] CIF weights; None without a parallel decoder


class AsrBackend(Protocol):
    """The networks of one ASR model behind NumPy arrays."""

    decoders: tuple[str, ...]

    def features(self, wav: np.ndarray) -> np.ndarray:
        """``wav [B, T] float32`` -> log-mel ``[B, M, F]`` (:mod:`tokenspeech.features`)."""
        ...

    def encode(self, mel: np.ndarray, mel_lengths: np.ndarray, chunk: int, left_chunks: int) -> Encoded:
        """Offline encoder pass; ``chunk = 0`` is full context, else the chunk-wise mask of streaming."""
        ...

    def paraformer(self, acoustic: np.ndarray, token_lengths: np.ndarray, hidden: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        """Parallel decoder: CIF embeddings ``[B, N, D]`` -> logits ``[B, N, V]``."""
        ...

    def attention_step(self) -> Any:
        """A ``StepModel`` with ``prepare(hidden [B, T, D], lengths [B]) -> state``."""
        ...

    def block_decoder(self) -> Any:
        """A ``BlockDecoderModel`` for one stream with ``init_state()``."""
        ...

    def init_stream(self) -> Any:
        """Streaming encoder state of one stream at its start."""
        ...

    def encode_stream(self, mel: np.ndarray, state: Any, chunk: int, left_chunks: int,
                      final: bool) -> tuple[Encoded, Any]:
        """New features ``mel [1, M, F']`` -> finished encoder frames (whole chunks; ``final`` flushes)."""
        ...


@dataclass(frozen=True)
class _Decoded:
    """Tokens of one utterance with per-token frame spans ``[start, end)``, or no spans."""

    tokens: tuple[int, ...]
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()


@dataclass(frozen=True)
class ParaformerPass:
    """One utterance after CIF and the parallel decoder: what the position search works on."""

    logits: np.ndarray  # [N, V], one row per fired position
    fired: CifOutput  # embeddings, first frame and firing frame of each position
    ctc_log_probs: np.ndarray  # [T, V] the shared encoder's CTC head over the valid frames

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``(first, firing)`` encoder frame of each position."""
        return list(zip(self.fired.starts.tolist(), self.fired.fires.tolist()))

    def ctc_scorer(self, vocabulary: Vocabulary) -> CtcPrefixScorer:
        return CtcPrefixScorer(self.ctc_log_probs, vocabulary.pad_id, vocabulary.eos_id)

    def greedy(self) -> PositionPath:
        """Each position's likeliest token (no LM, no CTC)."""
        return PositionPath(tuple(self.logits.argmax(axis=-1).tolist()), tuple(range(len(self.logits))))


def require_decoder(decoders: Sequence[str], decoder: str) -> None:
    """Raise :class:`ConfigError` when the model was built without ``decoder``."""
    if decoder not in decoders:
        raise ConfigError(f"this model has no '{decoder}' decoder; it was trained with {tuple(decoders)}")


class AsrRecognizer:
    """Batch recogniser (:class:`tokenspeech.asr.base.Recognizer`) over one backend and decoder."""

    def __init__(self, backend: AsrBackend, vocabulary: Vocabulary, mel: MelConfig,
                 options: RecognizerOptions = RecognizerOptions(), lm: TokenLM | None = None) -> None:
        """``lm``: a character language model fused into the search of ``ctc`` and ``ar`` (see :mod:`.lm`)."""
        require_decoder(backend.decoders, options.decoder)
        self.backend = backend
        self.vocabulary = vocabulary
        self.mel = mel
        self.options = options
        self.lm = lm
        self.lm_kind = getattr(lm, "kind", CHAR_LM_KIND)  # which defaults of LM_SETTINGS apply
        self.sample_rate = mel.sample_rate
        self.max_seconds = options.max_seconds
        self.space_id = vocabulary.encode(" ")[0]

    def _check(self, audio: np.ndarray, index: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        source = f"audio #{index} (from memory)"
        if audio.size == 0:
            raise AudioError(source, "the audio is empty (0 samples)")
        if not np.all(np.isfinite(audio)):
            raise AudioError(source, "the audio contains NaN or infinite samples")
        if audio.size / self.sample_rate > self.max_seconds:
            raise AudioError(source, f"the audio is too long ({audio.size / self.sample_rate:.1f} s > "
                             f"{self.max_seconds:.0f} s); segment it first")
        return audio

    def features(self, audios: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Padded log-mel ``[B, M, F]`` and frame counts ``[B]`` int64 (short audio padded to 100 ms)."""
        minimum = self.sample_rate // 10
        clean = [self._check(a, i) for i, a in enumerate(audios)]
        clean = [np.pad(a, (0, max(0, minimum - a.size))) for a in clean]
        padded = np.zeros((len(clean), max(a.size for a in clean)), dtype=np.float32)
        for row, audio in enumerate(clean):
            padded[row, : audio.size] = audio
        lengths = np.array([self.mel.num_frames(a.size) for a in clean], dtype=np.int64)
        return self.backend.features(padded), lengths

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Recognise each ``[T]`` float32 16 kHz array; results in input order."""
        if not audios:
            return []
        mel, mel_lengths = self.features(audios)
        chunk = self.options.chunk if self.options.decoder == "semiar" else 0
        encoded = self.backend.encode(mel, mel_lengths, chunk, self.options.left_chunks)
        decoded = self._decode(encoded)
        durations = [len(np.asarray(a).reshape(-1)) / self.sample_rate for a in audios]
        return [self.transcript(d, seconds) for d, seconds in zip(decoded, durations)]

    def _decode(self, encoded: Encoded) -> list[_Decoded]:
        decoder = self.options.decoder
        if decoder == "ctc":
            return self._decode_ctc(encoded)
        if decoder == "paraformer":
            return self._decode_paraformer(encoded)
        if decoder == "ar":
            return self._decode_ar(encoded)
        return self._decode_semiar(encoded)

    def _decode_ctc(self, encoded: Encoded) -> list[_Decoded]:
        results = []
        for row, length in enumerate(encoded.lengths.tolist()):
            lp = encoded.ctc_log_probs[row, :length]
            beam = self.options.beam(self.lm is not None)
            if beam == 1 and self.lm is None:
                path = ctc_greedy(lp)
            else:
                best = ctc_prefix_beam_search(lp, self.beam_options(beam), self.lm)[0]
                path = _aligned(lp, best.tokens)
            results.append(_Decoded(path.tokens, path.starts, path.ends))
        return results

    def beam_options(self, beam: int) -> CtcBeamOptions:
        """CTC beam settings for ``beam`` prefixes (with this recogniser's LM settings when it has one)."""
        if self.lm is None:
            return CtcBeamOptions(beam_size=beam)
        # with an LM: wider per-frame candidates, and frames that are surely blank skip the LM work
        weight, bonus = self.options.lm_settings(self.lm_kind)
        return CtcBeamOptions(beam_size=beam, token_beam=LM_TOKEN_BEAM, lm_weight=weight,
                              length_bonus=bonus, blank_skip=LM_BLANK_SKIP)

    def _decode_paraformer(self, encoded: Encoded) -> list[_Decoded]:
        passes = self.paraformer_pass(encoded)
        search = self.paraformer_search_options() if self.lm is not None else None
        decoded = []
        for done in passes:
            if search is None:
                path = done.greedy()
            else:
                scorer = done.ctc_scorer(self.vocabulary) if search.ctc_weight > 0 else None
                path = position_beam_search(done.logits, self.lm, search, scorer, done.spans)
            positions = list(path.positions)
            decoded.append(_Decoded(path.tokens, tuple(done.fired.starts[positions].tolist()),
                                    tuple((done.fired.fires[positions] + 1).tolist())))
        return decoded

    def paraformer_pass(self, encoded: Encoded) -> list[ParaformerPass]:
        """CIF and the parallel decoder's one pass over every utterance of ``encoded`` (no search yet)."""
        fired = [cif_fire(encoded.alphas[r, :n], encoded.hidden[r, :n], self.options.tail_threshold)
                 for r, n in enumerate(encoded.lengths.tolist())]
        counts = np.array([len(f.fires) for f in fired], dtype=np.int64)
        vocabulary_size = encoded.ctc_log_probs.shape[2]
        if int(counts.max()) == 0:
            logits = np.zeros((len(fired), 0, vocabulary_size), dtype=np.float32)
        else:
            inputs = np.zeros((len(fired), int(counts.max()), encoded.hidden.shape[2]), dtype=np.float32)
            for row, f in enumerate(fired):
                inputs[row, : len(f.fires)] = f.embeddings
            logits = self.backend.paraformer(inputs, counts, encoded.hidden, encoded.lengths)
        return [ParaformerPass(logits[r, : len(f.fires)], f, encoded.ctc_log_probs[r, :length])
                for r, (f, length) in enumerate(zip(fired, encoded.lengths.tolist()))]

    def paraformer_search_options(self) -> PositionBeamOptions:
        """The LM beam over Paraformer's positions as this recogniser runs it."""
        vocab = self.vocabulary
        return PositionBeamOptions(beam_size=self.options.beam(True), token_beam=LM_TOKEN_BEAM,
                                   lm_weight=self.options.lm_settings(self.lm_kind)[0],
                                   excluded=(vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id),
                                   space_id=self.space_id, space_penalty=PARAFORMER_SPACE_PENALTY,
                                   ctc_weight=self.options.joint_ctc_weight(),
                                   max_skips=PARAFORMER_MAX_SKIPS, skip_penalty=PARAFORMER_SKIP_PENALTY,
                                   ctc_window=PARAFORMER_CTC_WINDOW)

    def _decode_ar(self, encoded: Encoded) -> list[_Decoded]:
        vocab = self.vocabulary
        max_length = max(2, int(encoded.hidden.shape[1] * FRAME_SECONDS * self.options.max_tokens_per_second))
        adapter = self.backend.attention_step()
        state = adapter.prepare(encoded.hidden, encoded.lengths)
        if self.options.joint_ctc_weight() == 0 and self.lm is None:  # the attention decoder alone
            options = ARDecodingOptions(max_length=max_length, eos_id=vocab.eos_id, beam_size=self.options.beam())
            results = ARDecoder(options).run(adapter, state, np.full(encoded.hidden.shape[0], vocab.bos_id,
                                                                     dtype=np.int64))
        else:
            weight, bonus = self.options.lm_settings(self.lm_kind)
            joint = JointCtcAttentionDecoder(JointDecodingOptions(
                max_length=max_length, eos_id=vocab.eos_id, blank_id=vocab.pad_id, beam_size=self.options.beam(),
                ctc_weight=self.options.joint_ctc_weight(), lm_weight=weight, length_bonus=bonus if self.lm else 0.0,
                excluded=(vocab.pad_id, vocab.unk_id, vocab.bos_id)), self.lm)
            results = [joint.run(adapter, adapter.select(state, np.array([row])), vocab.bos_id,
                                 encoded.ctc_log_probs[row, :length])
                       for row, length in enumerate(encoded.lengths.tolist())]
        decoded = []
        for row, (result, length) in enumerate(zip(results, encoded.lengths.tolist())):
            path = _aligned(encoded.ctc_log_probs[row, :length], tuple(result.tokens))
            decoded.append(_Decoded(path.tokens, path.starts, path.ends))
        return decoded

    def _decode_semiar(self, encoded: Encoded) -> list[_Decoded]:
        backend = self.backend.block_decoder()
        results = []
        for row, length in enumerate(encoded.lengths.tolist()):
            streamer = SemiARStreamer(backend, backend.init_state(), self.options.chunk, self.options.tail_threshold)
            streamer.push(encoded.hidden[row, :length], encoded.alphas[row, :length])
            results.append(_from_hypothesis(streamer.finish()))
        return results

    def stream(self, decoder: str | None = None) -> StreamingSession:
        """A new streaming session (``decoder``: ``semiar`` or ``ctc``; default: ours if it streams, else semiar)."""
        default = self.options.decoder if self.options.decoder in ("semiar", "ctc") else "semiar"
        return StreamingSession(self, decoder or default)

    def transcript(self, decoded: _Decoded, seconds: float) -> Transcript:
        """Text and word times (seconds, clipped to the audio) of decoded tokens."""
        text = " ".join(self.vocabulary.decode(decoded.tokens).split())
        if not decoded.starts:
            return Transcript(text)
        words = []
        for span in word_spans(decoded.tokens, decoded.starts, decoded.ends, self.space_id):
            word = self.vocabulary.decode(span.tokens).strip()
            if word:
                start = min(span.start * FRAME_SECONDS, seconds)
                words.append(WordTiming(word, round(start, 3), round(min(span.end * FRAME_SECONDS, seconds), 3)))
        return Transcript(text, tuple(words))


class StreamingSession:
    """One audio stream: ``accept_audio`` pieces as they arrive, then ``finish`` once.

    The encoder runs chunk by chunk (``options.chunk`` frames of 40 ms) with
    its caches; ``semiar`` decodes each chunk's CIF block with the earlier
    labels as context, ``ctc`` decodes greedily. Interim transcripts only
    grow. Algorithmic latency: one chunk (240 ms by default) plus 30 ms of
    subsampling look-ahead and the 15 ms rest of the analysis window.
    """

    def __init__(self, recognizer: AsrRecognizer, decoder: str = "semiar") -> None:
        if decoder not in ("semiar", "ctc"):
            raise ConfigError(f"streaming supports the 'semiar' and 'ctc' decoders, not {decoder!r}")
        require_decoder(recognizer.backend.decoders, decoder)
        self.recognizer = recognizer
        self.decoder = decoder
        mel = recognizer.mel
        self.framer = AudioFramer(mel.win_length, mel.hop_length)
        self.encoder_state = recognizer.backend.init_stream()
        self.samples = 0
        self.finished = False
        if decoder == "semiar":
            backend = recognizer.backend.block_decoder()
            self.streamer: SemiARStreamer | CtcStreamer = SemiARStreamer(
                backend, backend.init_state(), recognizer.options.chunk, recognizer.options.tail_threshold)
        elif recognizer.lm is not None:  # the same beam search and LM as offline ctc, frame by frame
            beam = recognizer.options.beam(True)
            self.streamer = CtcStreamer(search=CtcPrefixBeam(recognizer.beam_options(beam), recognizer.lm))
        else:
            self.streamer = CtcStreamer()

    def _advance(self, samples: np.ndarray, final: bool) -> Program[StreamingHypothesis]:
        recognizer = self.recognizer
        options, backend = recognizer.options, recognizer.backend
        ready = self.framer.push(samples)
        mel = backend.features(ready[None]) if ready.size else np.zeros((1, recognizer.mel.n_mels, 0), np.float32)
        # the encoder pass is a call, so a batching driver can run concurrent streams' chunks together
        encoded, self.encoder_state = yield Call(backend.encode_stream, (mel, self.encoder_state, options.chunk,
                                                                         options.left_chunks, final))
        if isinstance(self.streamer, CtcStreamer):
            hypothesis = self.streamer.push(encoded.ctc_log_probs[0])
            return self.streamer.hypothesis(final) if final else hypothesis
        hypothesis = self.streamer.push(encoded.hidden[0], encoded.alphas[0])
        return self.streamer.finish() if final else hypothesis

    def accept_audio(self, samples: np.ndarray) -> Transcript:
        """Add 16 kHz float32 samples ``[S]``; returns the transcript so far (interim)."""
        return run(self.accept_audio_program(samples))

    def finish(self) -> Transcript:
        """Flush the last partial chunk and return the final transcript."""
        return run(self.finish_program())

    def accept_audio_program(self, samples: np.ndarray) -> Program[Transcript]:
        """:meth:`accept_audio` as a program (:mod:`tokenspeech.decoding.calls`) for a batching driver."""
        if self.finished:
            raise ConfigError("this streaming session is finished; start a new one")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise AudioError("stream", "the audio contains NaN or infinite samples")
        self.samples += samples.size
        return self._transcript((yield from self._advance(samples, final=False)))

    def finish_program(self) -> Program[Transcript]:
        """:meth:`finish` as a program for a batching driver."""
        if self.finished:
            raise ConfigError("finish() was already called on this streaming session")
        self.finished = True
        return self._transcript((yield from self._advance(np.zeros(0, dtype=np.float32), final=True)))

    def _transcript(self, hypothesis: StreamingHypothesis) -> Transcript:
        seconds = self.samples / self.recognizer.sample_rate
        return self.recognizer.transcript(_from_hypothesis(hypothesis), seconds)


def _aligned(log_probs: np.ndarray, tokens: tuple[int, ...]) -> CtcPath:
    """CTC frame spans for ``tokens``; without spans when they cannot be aligned."""
    try:
        return ctc_align(log_probs, tokens)
    except ValueError:
        return CtcPath(tokens, (), ())


def _from_hypothesis(h: StreamingHypothesis) -> _Decoded:
    return _Decoded(h.tokens, h.starts, tuple(f + 1 for f in h.fires))
