"""A small client for tokenspeech's own gRPC API (tokenspeech.v1.Speech).

  python samples/clients/python_client.py models
  python samples/clients/python_client.py say "Hello there. How are you?" -o hello.wav --decoder semiar
  python samples/clients/python_client.py transcribe speech.wav --interim
  python samples/clients/python_client.py --token "$TS_TOKEN" models

Start a server first: ``tokenspeech serve``.
"""

from __future__ import annotations

import argparse
import sys
import wave
from collections.abc import Iterator

import grpc

from tokenspeech.serving.proto import speech_pb2 as pb
from tokenspeech.serving.proto import speech_pb2_grpc as pb_grpc


def list_models(stub: pb_grpc.SpeechStub, metadata: list[tuple[str, str]], args: argparse.Namespace) -> None:
    for model in stub.ListModels(pb.ListModelsRequest(), metadata=metadata).models:
        default = " (default)" if model.is_default else ""
        print(f"{model.kind:5} {model.name}{default}: {model.sample_rate_hz} Hz, voices {list(model.voices)}, "
              f"decoders {list(model.decoders)}, streaming {list(model.streaming_decoders)}")


def synthesis_chunks(stub: pb_grpc.SpeechStub, text: str, config: pb.SynthesisConfig,
                     metadata: list[tuple[str, str]], timeout: float) -> Iterator[pb.SynthesizeChunk]:
    """StreamingSynthesize: the config first, then the text; audio chunks as the server makes them."""
    requests = iter([pb.StreamingSynthesizeRequest(config=config), pb.StreamingSynthesizeRequest(text=text)])
    yield from stub.StreamingSynthesize(requests, metadata=metadata, timeout=timeout)


def say(stub: pb_grpc.SpeechStub, metadata: list[tuple[str, str]], args: argparse.Namespace) -> None:
    """Stream the audio into a WAV file chunk by chunk, printing when each chunk arrives."""
    config = pb.SynthesisConfig(voice=args.voice, decoder=args.decoder, seed=args.seed,
                                audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=args.rate))
    out = None
    try:
        for chunk in synthesis_chunks(stub, args.text, config, metadata, args.timeout):
            if out is None:
                out = wave.open(args.output, "wb")
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(chunk.audio_format.sample_rate_hz)
            out.writeframes(chunk.audio)
            print(f"chunk at {chunk.offset_seconds:6.2f} s, sentence {chunk.sentence}, {len(chunk.audio)} bytes"
                  f"{' (final)' if chunk.final else ''}")
    finally:
        if out is not None:
            out.close()
    print(f"wrote {args.output}")


def recognition_results(stub: pb_grpc.SpeechStub, pcm16: bytes, rate: int, config: pb.RecognitionConfig,
                        metadata: list[tuple[str, str]], timeout: float) -> Iterator[pb.RecognitionResult]:
    """StreamingRecognize: the config, then 16-bit PCM in 100 ms pieces as a microphone would send it."""
    piece = rate // 10 * 2

    def requests() -> Iterator[pb.StreamingRecognizeRequest]:
        yield pb.StreamingRecognizeRequest(config=config)
        for start in range(0, len(pcm16), piece):
            yield pb.StreamingRecognizeRequest(audio=pcm16[start:start + piece])

    for response in stub.StreamingRecognize(requests(), metadata=metadata, timeout=timeout):
        yield response.result


def transcribe(stub: pb_grpc.SpeechStub, metadata: list[tuple[str, str]], args: argparse.Namespace) -> None:
    """Send a 16-bit mono WAV file in 100 ms pieces and print the results."""
    with wave.open(args.audio, "rb") as handle:
        if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
            sys.exit("give a 16-bit mono WAV file")
        rate, frames = handle.getframerate(), handle.readframes(handle.getnframes())
    config = pb.RecognitionConfig(decoder=args.decoder, interim_results=args.interim,
                                  audio_format=pb.AudioFormat(encoding=pb.PCM16, sample_rate_hz=rate))
    for result in recognition_results(stub, frames, rate, config, metadata, args.timeout):
        print(f"{'final' if result.is_final else 'interim'} @ {result.audio_seconds:.2f} s: {result.transcript}")
        if result.is_final:
            for word in result.words:
                print(f"  {word.start_seconds:6.2f} {word.end_seconds:6.2f}  {word.word}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None, help="bearer token, if the server was started with --token")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models").set_defaults(run=list_models)
    speak = commands.add_parser("say")
    speak.add_argument("text")
    speak.add_argument("-o", "--output", default="out.wav")
    speak.add_argument("--voice", default="")
    speak.add_argument("--decoder", default="semiar", choices=("nar", "semiar", "ar"))
    speak.add_argument("--seed", type=int, default=0)
    speak.add_argument("--rate", type=int, default=0, help="output sample rate (0 = the model's)")
    speak.set_defaults(run=say)
    listen = commands.add_parser("transcribe")
    listen.add_argument("audio", help="16-bit mono WAV")
    listen.add_argument("--decoder", default="", help="semiar or ctc (default: the model's streaming decoder)")
    listen.add_argument("--interim", action="store_true", help="print interim results")
    listen.set_defaults(run=transcribe)
    args = parser.parse_args()
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.server) as channel:
        try:
            args.run(pb_grpc.SpeechStub(channel), metadata, args)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
