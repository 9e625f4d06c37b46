"""ONNX export of inference graphs, each with a JSON manifest naming its inputs and outputs once.

Exports go through dedicated wrapper ``nn.Module``s whose ``forward`` takes and
returns plain tensors (streaming state flattened into named inputs/outputs);
the runtime (:mod:`tokenspeech.runtime`) reads the names from the manifest.
"""
