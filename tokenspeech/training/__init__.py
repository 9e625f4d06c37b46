"""Training recipes, one module per model, and what they share.

- :mod:`.audio_dataset`: deterministic random crops from corpus JSONL listings
- :mod:`.losses`: multi-resolution spectral and adversarial losses
- :mod:`.codec`: ``train_codec(CodecTrainOptions)``, the tscodec recipe
- :mod:`.cli`: ``tokenspeech train <recipe> ...``

Recipes log to stdout and to ``<out>/train_log.jsonl``, checkpoint to
``<out>/last.pt`` (atomically) and resume exactly from it.
"""
