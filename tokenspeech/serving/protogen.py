"""Generate the Python stubs of ``proto/tokenspeech/v1/speech.proto`` into ``tokenspeech/serving/proto/``.

The stubs are committed (so ``pip install -e .`` needs no build step) and
``tests/test_serving_proto.py`` regenerates them into a temporary folder and
checks they are identical. Run ``make protos`` (or ``python -m
tokenspeech.serving.protogen``) after editing the ``.proto``.

protoc names the module after the proto path (``tokenspeech.v1``), which is
not where the stubs live; the one import line it writes into the gRPC module
is rewritten to the package path.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "tokenspeech/v1/speech.proto"
STUB_DIR = Path(__file__).resolve().parent / "proto"
STUB_PACKAGE = "tokenspeech.serving.proto"
GENERATED = ("speech_pb2.py", "speech_pb2.pyi", "speech_pb2_grpc.py")
_PROTOC_IMPORT = "from tokenspeech.v1 import speech_pb2"


def generate(out_dir: Path = STUB_DIR, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on the speech proto and write the stubs into ``out_dir``; returns their paths."""
    import tempfile

    from grpc_tools import protoc

    from tokenspeech.errors import ConfigError

    if not (proto_root / PROTO_FILE).is_file():
        raise ConfigError(f"{proto_root / PROTO_FILE} not found; generate the stubs from a source checkout")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{proto_root}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", str(proto_root / PROTO_FILE)]
        if protoc.main(args) != 0:
            raise ConfigError(f"protoc failed on {proto_root / PROTO_FILE}")
        generated = Path(tmp) / Path(PROTO_FILE).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            text = (generated / name).read_text(encoding="utf-8")
            text = text.replace(_PROTOC_IMPORT, f"from {STUB_PACKAGE} import speech_pb2")
            (out_dir / name).write_text(text, encoding="utf-8")
            written.append(out_dir / name)
    return written


def main() -> int:
    for path in generate():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
