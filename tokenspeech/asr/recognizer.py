"""The recognition pipeline on PyTorch: audio -> log-mel -> encoder -> a decoder -> text + word times.

``TorchRecognizer`` implements :class:`tokenspeech.asr.base.Recognizer` for
one decoder (``ctc | paraformer | ar | semiar``): a batch is padded, the
encoder runs once for the whole batch, then each utterance is decoded.
``StreamingSession`` is the per-stream handle the server uses:
``accept_audio(samples) -> interim Transcript`` and ``finish() -> final``.

Word times come from the alignment the decoder has: CTC frame spans (``ctc``;
``ar`` aligns its tokens with the CTC head) or CIF firing positions
(``paraformer``, ``semiar``); one encoder frame is 40 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tokenspeech.asr.base import DECODERS, Transcript, WordTiming
from tokenspeech.asr.model_io import AsrBundle, load_asr_model, save_asr_model
from tokenspeech.asr.torch_backend import TorchAttentionStep, TorchBlockDecoder
from tokenspeech.decoding.ar import ARDecoder, ARDecodingOptions
from tokenspeech.decoding.cif import cif_fire
from tokenspeech.decoding.ctc import CtcBeamOptions, CtcPath, ctc_align, ctc_greedy, ctc_prefix_beam_search
from tokenspeech.decoding.streaming_asr import AudioFramer, CtcStreamer, SemiARStreamer, StreamingHypothesis
from tokenspeech.decoding.words import word_spans
from tokenspeech.errors import AudioError, ConfigError
from tokenspeech.models.asr import FRAME_SECONDS
from tokenspeech.models.frontend import LogMel

logger = logging.getLogger(__name__)

__all__ = ["RecognizerOptions", "StreamingSession", "TorchRecognizer", "load_asr_model", "save_asr_model"]


@dataclass(frozen=True)
class RecognizerOptions:
    """How to decode. ``chunk`` (encoder frames of 40 ms) applies to ``semiar`` and streaming."""

    decoder: str = "ctc"
    beam_size: int = 1  # CTC prefix beam / AR beam; 1 = greedy
    chunk: int = 8  # 320 ms blocks
    left_chunks: int = 0  # 0 = all left context
    max_seconds: float = 30.0
    max_tokens_per_second: float = 40.0  # AR length cap
    tail_threshold: float = 0.5  # CIF: leftover weight that still fires a last token

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if self.beam_size < 1 or self.chunk < 1 or self.left_chunks < 0:
            raise ConfigError("beam_size and chunk must be >= 1, left_chunks >= 0")
        if self.max_seconds <= 0 or self.max_tokens_per_second <= 0:
            raise ConfigError("max_seconds and max_tokens_per_second must be > 0")
        if not 0 < self.tail_threshold <= 1:
            raise ConfigError("tail_threshold must be in (0, 1]")


@dataclass(frozen=True)
class _Decoded:
    """Tokens of one utterance with per-token frame spans ``[start, end)``, or no spans."""

    tokens: tuple[int, ...]
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()


class TorchRecognizer:
    """Batch recogniser over a loaded :class:`AsrBundle`."""

    def __init__(self, bundle: AsrBundle, options: RecognizerOptions = RecognizerOptions()) -> None:
        bundle.model.require(options.decoder)
        self.bundle = bundle
        self.options = options
        self.model = bundle.model.eval()
        self.frontend = LogMel(bundle.mel)
        self.sample_rate = bundle.mel.sample_rate
        self.max_seconds = options.max_seconds
        self.space_id = bundle.vocabulary.encode(" ")[0]

    @classmethod
    def load(cls, path: str | None = None, options: RecognizerOptions = RecognizerOptions()) -> TorchRecognizer:
        return cls(load_asr_model(path), options)

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

    @torch.inference_mode()
    def features(self, audios: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Padded log-mel ``[B, M, F]`` and frame counts ``[B]`` (short audio padded to 100 ms)."""
        minimum = self.sample_rate // 10
        clean = [self._check(a, i) for i, a in enumerate(audios)]
        clean = [np.pad(a, (0, max(0, minimum - a.size))) for a in clean]
        padded = np.zeros((len(clean), max(a.size for a in clean)), dtype=np.float32)
        for row, audio in enumerate(clean):
            padded[row, : audio.size] = audio
        lengths = torch.tensor([self.bundle.mel.num_frames(a.size) for a in clean])
        return self.frontend(torch.from_numpy(padded)), lengths

    @torch.inference_mode()
    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Recognise each ``[T]`` float32 16 kHz array; results in input order."""
        if not audios:
            return []
        mel, mel_lengths = self.features(audios)
        chunk = self.options.chunk if self.options.decoder == "semiar" else 0
        encoded, lengths = self.model.encode(mel, mel_lengths, chunk, self.options.left_chunks)
        decoded = self._decode(encoded, lengths)
        durations = [len(np.asarray(a).reshape(-1)) / self.sample_rate for a in audios]
        return [self.transcript(d, seconds) for d, seconds in zip(decoded, durations)]

    def _decode(self, encoded: Tensor, lengths: Tensor) -> list[_Decoded]:
        decoder = self.options.decoder
        if decoder == "ctc":
            return self._decode_ctc(encoded, lengths)
        if decoder == "paraformer":
            return self._decode_paraformer(encoded, lengths)
        if decoder == "ar":
            return self._decode_ar(encoded, lengths)
        return self._decode_semiar(encoded, lengths)

    def _decode_ctc(self, encoded: Tensor, lengths: Tensor) -> list[_Decoded]:
        log_probs = self.model.ctc_log_probs(encoded).float().numpy()
        results = []
        for row, length in enumerate(lengths.tolist()):
            lp = log_probs[row, :length]
            if self.options.beam_size == 1:
                path = ctc_greedy(lp)
            else:
                best = ctc_prefix_beam_search(lp, CtcBeamOptions(beam_size=self.options.beam_size))[0]
                path = _aligned(lp, best.tokens)
            results.append(_Decoded(path.tokens, path.starts, path.ends))
        return results

    def _decode_paraformer(self, encoded: Tensor, lengths: Tensor) -> list[_Decoded]:
        alphas = self.model.predictor(encoded).float().numpy()
        hidden = encoded.float().numpy()
        fired = [cif_fire(alphas[r, :n], hidden[r, :n], self.options.tail_threshold)
                 for r, n in enumerate(lengths.tolist())]
        counts = torch.tensor([len(f.fires) for f in fired])
        if int(counts.max()) == 0:
            return [_Decoded(()) for _ in fired]
        inputs = torch.zeros(len(fired), int(counts.max()), encoded.shape[2])
        for row, f in enumerate(fired):
            inputs[row, : len(f.fires)] = torch.from_numpy(f.embeddings)
        tokens = self.model.parallel_decoder(inputs, counts, encoded, lengths).argmax(dim=-1).numpy()
        return [_Decoded(tuple(tokens[r, : len(f.fires)].tolist()), tuple(f.starts.tolist()),
                         tuple((f.fires + 1).tolist())) for r, f in enumerate(fired)]

    def _decode_ar(self, encoded: Tensor, lengths: Tensor) -> list[_Decoded]:
        vocab = self.bundle.vocabulary
        max_length = max(2, int(encoded.shape[1] * FRAME_SECONDS * self.options.max_tokens_per_second))
        options = ARDecodingOptions(max_length=max_length, eos_id=vocab.eos_id, beam_size=self.options.beam_size)
        adapter = TorchAttentionStep(self.model.attention_decoder)
        results = ARDecoder(options).run(adapter, adapter.prepare(encoded, lengths),
                                         np.full(encoded.shape[0], vocab.bos_id, dtype=np.int64))
        log_probs = self.model.ctc_log_probs(encoded).float().numpy()
        decoded = []
        for row, (result, length) in enumerate(zip(results, lengths.tolist())):
            path = _aligned(log_probs[row, :length], tuple(result.tokens))
            decoded.append(_Decoded(path.tokens, path.starts, path.ends))
        return decoded

    def _decode_semiar(self, encoded: Tensor, lengths: Tensor) -> list[_Decoded]:
        alphas = self.model.predictor(encoded).float().numpy()
        hidden = encoded.float().numpy()
        backend = TorchBlockDecoder(self.model.parallel_decoder)
        results = []
        for row, length in enumerate(lengths.tolist()):
            streamer = SemiARStreamer(backend, backend.init_state(), self.options.chunk, self.options.tail_threshold)
            streamer.push(hidden[row, :length], alphas[row, :length])
            results.append(_from_hypothesis(streamer.finish()))
        return results

    def stream(self, decoder: str | None = None) -> StreamingSession:
        """A new streaming session (``decoder``: ``semiar`` or ``ctc``; default: ours if it streams, else semiar)."""
        default = self.options.decoder if self.options.decoder in ("semiar", "ctc") else "semiar"
        return StreamingSession(self, decoder or default)

    def transcript(self, decoded: _Decoded, seconds: float) -> Transcript:
        """Text and word times (seconds, clipped to the audio) of decoded tokens."""
        text = " ".join(self.bundle.vocabulary.decode(decoded.tokens).split())
        if not decoded.starts:
            return Transcript(text)
        words = []
        for span in word_spans(decoded.tokens, decoded.starts, decoded.ends, self.space_id):
            word = self.bundle.vocabulary.decode(span.tokens).strip()
            if word:
                start = min(span.start * FRAME_SECONDS, seconds)
                words.append(WordTiming(word, round(start, 3), round(min(span.end * FRAME_SECONDS, seconds), 3)))
        return Transcript(text, tuple(words))


class StreamingSession:
    """One audio stream: ``accept_audio`` pieces as they arrive, then ``finish`` once.

    The encoder runs chunk by chunk (``options.chunk`` frames of 40 ms) with
    its caches; ``semiar`` decodes each chunk's CIF block with the earlier
    labels as context, ``ctc`` decodes greedily. Interim transcripts only
    grow. Algorithmic latency: one chunk (320 ms by default) plus 30 ms of
    subsampling look-ahead and the 15 ms rest of the analysis window.
    """

    def __init__(self, recognizer: TorchRecognizer, decoder: str = "semiar") -> None:
        if decoder not in ("semiar", "ctc"):
            raise ConfigError(f"streaming supports the 'semiar' and 'ctc' decoders, not {decoder!r}")
        recognizer.model.require(decoder)
        self.recognizer = recognizer
        self.decoder = decoder
        model, mel = recognizer.model, recognizer.bundle.mel
        self.framer = AudioFramer(mel.win_length, mel.hop_length)
        self.encoder_state = model.encoder.init_state(1)
        self.samples = 0
        self.finished = False
        if decoder == "semiar":
            backend = TorchBlockDecoder(model.parallel_decoder)
            self.streamer: SemiARStreamer | CtcStreamer = SemiARStreamer(
                backend, backend.init_state(), recognizer.options.chunk, recognizer.options.tail_threshold)
        else:
            self.streamer = CtcStreamer()

    @torch.inference_mode()
    def _advance(self, samples: np.ndarray, final: bool) -> StreamingHypothesis:
        options, model = self.recognizer.options, self.recognizer.model
        ready = self.framer.push(samples)
        mel = self.recognizer.frontend(torch.from_numpy(ready)[None]) if ready.size else \
            torch.zeros(1, self.recognizer.bundle.mel.n_mels, 0)
        frames, self.encoder_state = model.encoder.step(mel, self.encoder_state, options.chunk,
                                                        options.left_chunks, final=final)
        if isinstance(self.streamer, CtcStreamer):
            hypothesis = self.streamer.push(model.ctc_log_probs(frames)[0].numpy())
            return self.streamer.hypothesis(final) if final else hypothesis
        hypothesis = self.streamer.push(frames[0].numpy(), model.predictor(frames)[0].numpy())
        return self.streamer.finish() if final else hypothesis

    def accept_audio(self, samples: np.ndarray) -> Transcript:
        """Add 16 kHz float32 samples ``[S]``; returns the transcript so far (interim)."""
        if self.finished:
            raise ConfigError("this streaming session is finished; start a new one")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise AudioError("stream", "the audio contains NaN or infinite samples")
        self.samples += samples.size
        return self._transcript(self._advance(samples, final=False))

    def finish(self) -> Transcript:
        """Flush the last partial chunk and return the final transcript."""
        if self.finished:
            raise ConfigError("finish() was already called on this streaming session")
        self.finished = True
        return self._transcript(self._advance(np.zeros(0, dtype=np.float32), final=True))

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
