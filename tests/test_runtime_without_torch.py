"""The embedded runtime in a fresh virtual environment with only numpy, onnxruntime and soundfile.

``python -m venv --system-site-packages`` would see our torch, so the venv
is a plain one; it is cached under the temp dir, keyed by its requirements
and the Python version, so reruns skip the install. The test runs
``samples/embedded/speak_and_listen.py`` on a tiny export and checks that
torch was never imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tiny_exports import export_tiny_models

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = ("numpy", "onnxruntime", "soundfile")


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def runtime_venv() -> Path:
    """A cached venv with just :data:`REQUIREMENTS`; skips the test when they cannot be installed."""
    marker = hashlib.sha256(f"{REQUIREMENTS} {sys.version}".encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"tokenspeech-runtime-venv-{marker}"
    ready = venv / ".ready"
    if ready.is_file():
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    install = subprocess.run([str(_bin(venv, "python")), "-m", "pip", "install", "-q", *REQUIREMENTS],
                             capture_output=True, text=True, check=False)
    if install.returncode:
        pytest.skip(f"cannot install {', '.join(REQUIREMENTS)} into a fresh venv: {install.stderr[-500:]}")
    ready.write_text(marker)
    return venv


@pytest.mark.slow
def test_embedded_sample_runs_without_torch(tmp_path: Path) -> None:
    venv = runtime_venv()
    python = str(_bin(venv, "python"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, env=env, check=False)
    assert probe.returncode != 0, "the fresh venv must not have torch"
    export = tmp_path / "export"
    export_tiny_models(tmp_path / "models", export)
    result = subprocess.run(
        [python, str(REPO / "samples" / "embedded" / "speak_and_listen.py"), str(export), "Hello there.",
         "-o", str(tmp_path / "hello.wav"), "--provider", "cpu", "--threads", "1", "--asr-decoder", "paraformer"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert "heard:" in result.stdout and (tmp_path / "hello.wav").stat().st_size > 1000
    assert "runs on CPUExecutionProvider" in result.stderr
