"""Audio codec tokenizers: waveforms <-> discrete tokens ``[B, K, F]``."""
