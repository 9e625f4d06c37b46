"""The AudioTokenizer seam every codec implements.

Axis names used throughout: B batch, C channels (always 1 here), T samples,
K codebooks, F frames. Codes are integers in ``[0, codebook_size)``.

A codec has a fixed maximum of ``num_codebooks`` residual codebooks; using the
first ``k`` of them gives a lower bitrate (``bitrate_kbps(k)``). The streaming
methods carry all history in an explicit, typed state object, so the same
step function can be exported to ONNX with the state as inputs and outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar

from tokenspeech.errors import ConfigError

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class CodecInfo:
    """What a token stream needs to be decoded again; stored in token files and model cards."""

    name: str
    version: str
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        return round(self.sample_rate / self.frame_rate)

    def bitrate_kbps(self, codebooks: int) -> float:
        """Bitrate of a stream that uses the first ``codebooks`` codebooks."""
        return codebooks * self.frame_rate * self.bits_per_code / 1000

    def bitrate_ladder(self) -> dict[int, float]:
        """Codebook count -> kbps, for every usable count."""
        return {k: round(self.bitrate_kbps(k), 3) for k in range(1, self.num_codebooks + 1)}

    def codebooks_for_kbps(self, kbps: float) -> int:
        """The largest codebook count whose bitrate does not exceed ``kbps`` (at least 1).

        Raises :class:`ConfigError` if even one codebook exceeds ``kbps`` by
        more than 5 %, listing the bitrates this codec offers.
        """
        ladder = self.bitrate_ladder()
        fitting = [k for k, rate in ladder.items() if rate <= kbps * 1.05]
        if not fitting:
            offered = ", ".join(f"{r:g}" for r in ladder.values())
            raise ConfigError(f"{self.name} cannot go as low as {kbps:g} kbps; it offers {offered} kbps")
        return max(fitting)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CodecInfo":
        return cls(**{k: data[k] for k in ("name", "version", "sample_rate", "frame_rate", "num_codebooks",
                                           "codebook_size")})


class AudioTokenizer(Protocol, Generic[StateT]):
    """Waveform <-> codes. Arrays are torch tensors (PyTorch backend) or NumPy (ONNX runtime).

    - ``encode(wav [B, 1, T] float32, codebooks) -> codes [B, K, F] int64``
    - ``decode(codes [B, K, F]) -> wav [B, 1, F * hop_length]``
    - streaming: ``init_encode_state(B)`` / ``encode_step(wav_chunk, state)`` and
      ``init_decode_state(B)`` / ``decode_step(codes_chunk, state)``; chunks are
      whole frames, and concatenated step outputs equal the offline outputs.
    """

    info: CodecInfo

    def encode(self, wav: Any, codebooks: int | None = None) -> Any: ...

    def decode(self, codes: Any) -> Any: ...

    def init_encode_state(self, batch_size: int) -> StateT: ...

    def encode_step(self, wav: Any, state: StateT, codebooks: int | None = None) -> tuple[Any, StateT]: ...

    def init_decode_state(self, batch_size: int) -> StateT: ...

    def decode_step(self, codes: Any, state: StateT) -> tuple[Any, StateT]: ...
