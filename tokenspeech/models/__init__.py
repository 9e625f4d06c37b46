"""Neural network modules only: no I/O, no decoding loops, no config files."""
