"""The gRPC server: tokenspeech's own API and a Riva-compatible one over the same loaded models.

Start it with ``tokenspeech serve`` or :func:`tokenspeech.serving.server.serve`.
Modules: ``config`` (options), ``registry``/``backends`` (loaded models),
``batcher``/``sessions`` (compute off the event loop, stream limits),
``service`` (the request logic both APIs share), ``native``/``riva``
(servicers that only map protos), ``audio_format`` (encodings and sample
rates), ``status`` (errors to gRPC codes, in one place), ``interceptors``
(bearer token, request metrics), ``metrics``, ``server``, ``cli``,
``protogen`` (regenerates the committed stubs in ``proto/``).
"""
