"""Turn audio into codec tokens and back.

  tokenspeech codec encode IN -o OUT.tok [--codec NAME] [--kbps B] [--weights PATH]
      Read any audio file (resampled to the codec's rate, mixed to mono) and
      write its tokens to a .tok file: a versioned, CRC-checked file that
      names the codec, the codebooks used and the original length. --kbps
      picks the largest number of codebooks whose bitrate fits (default 1.5).

  tokenspeech codec decode IN.tok -o OUT.wav [--weights PATH]
      Rebuild audio from a .tok file with the codec named inside it, trimmed
      to the original length, at the codec's sample rate (.wav, .flac, .ogg).

  tokenspeech codec info [NAME]
      Sample rate, frame rate and bitrate ladder (codebooks -> kbps) of one
      codec or of all of them.

Codecs: tscodec (ours, the default; weights shipped in tokenspeech/assets)
and encodec_24khz (Meta's EnCodec; weights are never downloaded: pass
--weights, set TOKENSPEECH_ENCODEC_WEIGHTS, or put encodec_24khz-d7cc33bc.th
in the torch hub cache, see the error message for how to get it).

Examples:
  tokenspeech codec encode speech.wav -o speech.tok
  tokenspeech codec encode speech.flac -o speech.tok --codec encodec_24khz --kbps 6
  tokenspeech codec decode speech.tok -o speech.decoded.wav
  tokenspeech codec info encodec_24khz
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from tokenspeech.codecs.base import AudioTokenizer

LOG = logging.getLogger(__name__)
CHUNK_FRAMES = 750  # 10 s at 75 Hz per streaming step: bounded memory for long files


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``encode``, ``decode`` and ``info`` sub-commands to ``parser``."""
    actions = parser.add_subparsers(dest="codec_command", metavar="ACTION", required=True)
    encode = actions.add_parser("encode", help="audio file -> .tok token file",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    encode.add_argument("input", type=Path, help="audio file (any format load_audio reads)")
    encode.add_argument("-o", "--output", type=Path, required=True, help="token file to write (.tok)")
    encode.add_argument("--codec", default="tscodec", help="codec name (see `tokenspeech codec info`)")
    encode.add_argument("--kbps", type=float, default=1.5, help="target bitrate; picks the codebook count")
    encode.add_argument("--weights", type=Path, default=None, help="codec weights file instead of the default")
    encode.set_defaults(run=_run_encode)
    decode = actions.add_parser("decode", help=".tok token file -> audio file",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    decode.add_argument("input", type=Path, help="token file written by `codec encode`")
    decode.add_argument("-o", "--output", type=Path, required=True, help="audio file to write (.wav/.flac/.ogg)")
    decode.add_argument("--weights", type=Path, default=None, help="codec weights file instead of the default")
    decode.set_defaults(run=_run_decode)
    info = actions.add_parser("info", help="sample rate, frame rate and bitrate ladder of the codecs")
    info.add_argument("name", nargs="?", default=None, help="one codec (default: all)")
    info.add_argument("--weights", type=Path, default=None, help="weights to load for codecs that need them")
    info.set_defaults(run=_run_info)


def _encode_chunked(codec: AudioTokenizer[Any], wav: np.ndarray, codebooks: int) -> np.ndarray:
    """Mono ``wav [T]`` -> codes ``[K, ceil(T / hop)]`` through ``encode_step`` in bounded chunks."""
    import numpy as np
    import torch

    hop = codec.info.hop_length
    wav = np.pad(wav, (0, -len(wav) % hop))
    state, pieces = codec.init_encode_state(1), []
    for start in range(0, len(wav), CHUNK_FRAMES * hop):
        chunk = torch.from_numpy(np.ascontiguousarray(wav[start:start + CHUNK_FRAMES * hop])).view(1, 1, -1)
        codes, state = codec.encode_step(chunk, state, codebooks)
        pieces.append(np.asarray(codes)[0])
    return np.concatenate(pieces, axis=-1)


def _decode_chunked(codec: AudioTokenizer[Any], codes: np.ndarray) -> np.ndarray:
    """codes ``[K, F]`` -> mono ``wav [F * hop]`` through ``decode_step`` in bounded chunks."""
    import numpy as np
    import torch

    state, pieces = codec.init_decode_state(1), []
    for start in range(0, codes.shape[1], CHUNK_FRAMES):
        wav, state = codec.decode_step(torch.from_numpy(codes[None, :, start:start + CHUNK_FRAMES]), state)
        pieces.append(np.asarray(wav, dtype=np.float32).reshape(-1))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _run_encode(args: argparse.Namespace) -> int:
    from tokenspeech.audio import load_audio, resample
    from tokenspeech.codecs.registry import load_codec
    from tokenspeech.codecs.tokenfile import TokenMeta, write_tokens

    codec = load_codec(args.codec, args.weights)
    info = codec.info
    codebooks = info.codebooks_for_kbps(args.kbps)
    source, source_rate = load_audio(args.input, sample_rate=None)
    wav = resample(source, source_rate, info.sample_rate)
    codes = _encode_chunked(codec, wav, codebooks)
    meta = TokenMeta(num_samples=len(wav), source_sample_rate=source_rate, extra={"source": args.input.name})
    write_tokens(args.output, codes, info, meta)
    print(f"{args.input} -> {args.output}: {info.name}, {codebooks} codebooks x {codes.shape[1]} frames "
          f"({info.bitrate_kbps(codebooks):g} kbps, {len(wav) / info.sample_rate:.2f} s, "
          f"{args.output.stat().st_size} bytes)")
    return 0


def _run_decode(args: argparse.Namespace) -> int:
    from tokenspeech.audio import save_audio
    from tokenspeech.codecs.registry import load_codec
    from tokenspeech.codecs.tokenfile import read_tokens
    from tokenspeech.errors import TokenFileError

    tokens = read_tokens(args.input)
    codec = load_codec(tokens.info.name, args.weights)
    ours, theirs = codec.info, tokens.info
    if (ours.sample_rate, ours.frame_rate, ours.codebook_size) != (theirs.sample_rate, theirs.frame_rate,
                                                                    theirs.codebook_size):
        raise TokenFileError(f"{args.input}: made by {theirs.name} {theirs.version} ({theirs.sample_rate} Hz, "
                             f"{theirs.frame_rate:g} frames/s, {theirs.codebook_size} codes), which the loaded "
                             f"{ours.name} {ours.version} cannot decode")
    if ours.version != theirs.version:
        LOG.warning("%s was made by %s version %s, decoding with version %s", args.input, theirs.name,
                    theirs.version, ours.version)
    wav = _decode_chunked(codec, tokens.codes)[: tokens.meta.num_samples]
    save_audio(args.output, wav, ours.sample_rate)
    print(f"{args.input} -> {args.output}: {len(wav) / ours.sample_rate:.2f} s at {ours.sample_rate} Hz "
          f"({theirs.name}, {tokens.codebooks} codebooks, {tokens.kbps:g} kbps)")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from tokenspeech.codecs.registry import available_codecs, codec_info
    from tokenspeech.errors import ModelLoadError

    names = [args.name] if args.name else available_codecs()
    for name in names:
        try:
            info = codec_info(name, args.weights)
        except ModelLoadError as error:
            if args.name:
                raise
            print(f"{name}: weights not available ({error})\n")
            continue
        print(f"{info.name} (version {info.version}): {info.sample_rate} Hz, {info.frame_rate:g} frames/s, "
              f"{info.num_codebooks} codebooks of {info.codebook_size} codes")
        print("  codebooks  kbps")
        for count, kbps in info.bitrate_ladder().items():
            print(f"  {count:9d}  {kbps:g}")
        print()
    return 0
