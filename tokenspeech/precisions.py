"""The names of the inference precisions, importable without torch (command lines, configs, benchmarks).

What each one does: :mod:`tokenspeech.models.precision`.
"""

PRECISIONS = ("auto", "fp32", "bf16")
