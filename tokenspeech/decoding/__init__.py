"""Decoding strategies over a narrow model interface, NumPy only (no torch import).

The same strategy runs on PyTorch modules and on ONNX Runtime sessions: each
backend adapts its model to the protocols in ``base.py`` and hands the
strategy NumPy logits. Model state is opaque to the strategies.

The TTS loops (masked, semi-AR, AR sampling) are written as programs
(``calls.py``) that yield each model pass as a value, so the same loop runs
one session alone or, driven by a batcher, many sessions in shared passes.
"""
