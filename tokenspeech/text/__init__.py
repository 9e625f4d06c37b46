"""Text front-end: normalisation, grapheme-to-phoneme, vocabularies."""
