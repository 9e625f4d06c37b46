"""Run exported graphs with onnxruntime and NumPy only: importing this package never imports torch.

Usage::

    from tokenspeech import runtime
    rt = runtime.load("export/", runtime.RuntimeOptions(provider="auto", intra_op_threads=2))
    audio = rt.synthesizer().synthesize("Hello there.").audio          # float32, 16 kHz
    text = rt.recognizer().transcribe_batch([audio])[0].text

The directory is what ``tokenspeech export tts asr -o export/`` writes: ONNX
graphs plus ``manifest.json``. Sessions are created on first use; the
provider each runs on is logged (see :mod:`tokenspeech.runtime.sessions`).
"""

from __future__ import annotations

from tokenspeech.runtime.api import Runtime, load
from tokenspeech.runtime.sessions import PROVIDER_CHOICES, RuntimeOptions

__all__ = ["PROVIDER_CHOICES", "Runtime", "RuntimeOptions", "load"]
