"""tokenspeech: speech generation and recognition on discrete audio tokens.

Importing this package does no work: no model loads, no device probing, no I/O.
"""

__version__ = "0.1.0"
