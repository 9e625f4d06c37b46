"""Audio on the wire: encodings, sample rates, and converting to and from float32 model audio.

Both APIs name encodings differently; servicers map their enums onto
:data:`ENCODINGS` and everything below works with :class:`AudioFormat`.
Output goes through :class:`AudioEncoder` (resample, then encode, chunk by
chunk); streaming input through :class:`AudioDecoder` (decode, then resample);
whole inputs through :func:`decode_audio`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from tokenspeech.errors import AudioError, ConfigError

PCM16 = "pcm16"
FLOAT32 = "float32"
OGG_OPUS = "ogg_opus"
ENCODINGS = (PCM16, FLOAT32, OGG_OPUS)
RATE_RANGE = (8000, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_SAMPLE_BYTES = {PCM16: 2, FLOAT32: 4}


@dataclass(frozen=True)
class AudioFormat:
    """An encoding and a sample rate (Hz), checked once here."""

    encoding: str
    sample_rate: int

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"unsupported audio encoding {self.encoding!r}; use one of: {', '.join(ENCODINGS)}")
        low, high = RATE_RANGE
        if not low <= self.sample_rate <= high:
            raise ConfigError(f"sample rate {self.sample_rate} Hz is not supported; give a rate in {low}..{high} Hz")
        if self.encoding == OGG_OPUS and self.sample_rate not in OPUS_RATES:
            rates = ", ".join(str(r) for r in OPUS_RATES)
            raise ConfigError(f"Ogg-Opus works at {rates} Hz only, not {self.sample_rate} Hz; pick one of those "
                              "or use PCM16")


def _resampler(source: int, target: int):  # soxr.ResampleStream | None
    if source == target:
        return None
    import soxr

    return soxr.ResampleStream(source, target, 1, dtype="float32", quality="HQ")


class _ByteSink(io.RawIOBase):
    """A write-only file that hands out what was written since the last ``take``."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # libsndfile asks where it is; it only ever appends for Ogg

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._size

    def tell(self) -> int:
        return self._size

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._pending += bytes(data)
        self._size += len(data)
        return len(data)

    def take(self) -> bytes:
        data, self._pending = bytes(self._pending), bytearray()
        return data


class AudioEncoder:
    """Float32 model audio ``[T]`` at ``source_rate`` -> bytes in ``fmt``, chunk by chunk.

    PCM and float32 bytes come out as soon as their samples do; Ogg-Opus
    comes out page by page, so some chunks give no bytes and ``finish``
    gives the rest.
    """

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self._resampler = _resampler(source_rate, fmt.sample_rate)
        self._sink: _ByteSink | None = None
        self._ogg = None
        if fmt.encoding == OGG_OPUS:
            import soundfile as sf

            self._sink = _ByteSink()
            self._ogg = sf.SoundFile(self._sink, "w", samplerate=fmt.sample_rate, channels=1, format="OGG",
                                     subtype="OPUS")

    def push(self, audio: np.ndarray, last: bool = False) -> bytes:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio, last=last)
        audio = np.clip(audio, -1.0, 1.0)
        if self._ogg is None:
            if self.format.encoding == PCM16:
                return (audio * 32767.0).round().astype("<i2").tobytes()
            return audio.astype("<f4").tobytes()
        self._ogg.write(audio)
        if last:
            self._ogg.close()
        return self._sink.take()

    def finish(self) -> bytes:
        """Flush the resampler and close the container; call once, after the last ``push``."""
        return self.push(np.zeros(0, dtype=np.float32), last=True)


def _wav_data_offset(data: bytes) -> int | None:
    """Where the samples start in a RIFF/WAVE header, or None if ``data`` does not hold the whole header."""
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        if chunk == b"data":
            return position + 8
        position += 8 + size + (size & 1)
    return None


def is_wav(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def _samples(data: bytes, encoding: str) -> np.ndarray:
    if encoding == PCM16:
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(samples)):
        raise AudioError("request audio", "the float32 audio contains NaN or infinite samples")
    return samples


def decode_audio(data: bytes, fmt: AudioFormat, target_rate: int) -> np.ndarray:
    """A whole input (raw samples, a WAV file, or an Ogg-Opus file) -> float32 ``[T]`` at ``target_rate``."""
    from tokenspeech.audio import resample, to_mono

    if not data:
        raise AudioError("request audio", "the audio is empty (0 bytes)")
    if fmt.encoding == OGG_OPUS or is_wav(data):
        import soundfile as sf

        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            kind = "Ogg-Opus" if fmt.encoding == OGG_OPUS else "WAV"
            raise AudioError("request audio", f"not readable as {kind} ({error})") from error
        return resample(to_mono(samples), rate, target_rate)
    width = _SAMPLE_BYTES[fmt.encoding]
    if len(data) % width:
        raise AudioError("request audio", f"{len(data)} bytes is not a whole number of {fmt.encoding} samples "
                         f"({width} bytes each)")
    return resample(_samples(data, fmt.encoding), fmt.sample_rate, target_rate)


class AudioDecoder:
    """Streaming input: raw PCM16 or float32 pieces (a leading WAV header is skipped) -> float32 at ``target_rate``."""

    def __init__(self, fmt: AudioFormat, target_rate: int) -> None:
        if fmt.encoding == OGG_OPUS:
            raise ConfigError("Ogg-Opus input is accepted by the unary Recognize call only; stream PCM16 or "
                              "float32 audio instead")
        self.format = fmt
        self._width = _SAMPLE_BYTES[fmt.encoding]
        self._resampler = _resampler(fmt.sample_rate, target_rate)
        self._buffer = b""
        self._started = False

    def push(self, data: bytes) -> np.ndarray:
        buffer = self._buffer + data
        if not self._started:
            if len(buffer) < 12 and b"RIFF".startswith(buffer[:4]):
                self._buffer = buffer
                return np.zeros(0, dtype=np.float32)
            if is_wav(buffer):
                offset = _wav_data_offset(buffer)
                if offset is None:
                    self._buffer = buffer
                    return np.zeros(0, dtype=np.float32)
                buffer = buffer[offset:]
            self._started = True
        whole = len(buffer) - len(buffer) % self._width
        self._buffer = buffer[whole:]
        return self._resample(_samples(buffer[:whole], self.format.encoding), last=False)

    def finish(self) -> np.ndarray:
        if self._buffer and self._started:
            raise AudioError("stream", f"the audio ends in the middle of a {self.format.encoding} sample "
                             f"({len(self._buffer)} stray bytes)")
        return self._resample(np.zeros(0, dtype=np.float32), last=True)

    def _resample(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last).astype(np.float32, copy=False)
