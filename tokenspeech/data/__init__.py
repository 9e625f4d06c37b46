"""Corpus builder: text sources, teacher and espeak-ng synthesis, splits, manifests."""
