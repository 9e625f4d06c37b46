"""NVIDIA's own Riva client (``pip install nvidia-riva-client``), unchanged, against a tokenspeech server.

  python samples/clients/riva_client.py tts "Hello from a Riva client." -o riva.wav
  python samples/clients/riva_client.py asr speech.wav

Voices are ``VOICE`` (default model) or ``MODEL.VOICE``; tokenspeech options go in
``custom_configuration`` (``decoder``, ``steps``, ``seed``, ``rate``, ``model``).
Riva's own scripts work too, e.g. ``riva_tts_client`` / ``riva_streaming_asr_client`` with
``--server 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import sys
import wave

import grpc
import riva.client


def tts(auth: riva.client.Auth, args: argparse.Namespace) -> None:
    service = riva.client.SpeechSynthesisService(auth)
    rate = 16000
    with wave.open(args.output, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for response in service.synthesize_online(args.text, voice_name=args.voice or None, sample_rate_hz=rate,
                                                  custom_configuration={"decoder": "semiar"}):
            out.writeframes(response.audio)
    print(f"wrote {args.output}")


def asr(auth: riva.client.Auth, args: argparse.Namespace) -> None:
    service = riva.client.ASRService(auth)
    config = riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, language_code="en-US",
                                             enable_word_time_offsets=True),
        interim_results=True)
    riva.client.add_audio_file_specs_to_config(config, args.audio)
    with riva.client.AudioChunkFileIterator(args.audio, 1600) as chunks:
        riva.client.print_streaming(service.streaming_response_generator(chunks, config), show_intermediate=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    speak = commands.add_parser("tts")
    speak.add_argument("text")
    speak.add_argument("-o", "--output", default="riva.wav")
    speak.add_argument("--voice", default="")
    speak.set_defaults(run=tts)
    listen = commands.add_parser("asr")
    listen.add_argument("audio", help="a WAV file")
    listen.set_defaults(run=asr)
    args = parser.parse_args()
    metadata = [["authorization", f"Bearer {args.token}"]] if args.token else None
    try:
        args.run(riva.client.Auth(uri=args.server, metadata_args=metadata), args)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
