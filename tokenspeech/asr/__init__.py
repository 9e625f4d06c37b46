"""Speech recognition: audio -> features -> tokens -> text with word timestamps."""
