"""Evaluation: how well tokenspeech speaks, hears and compresses.

- :mod:`tokenspeech.eval.wer`: the English scoring normaliser and corpus-level
  word / character error rates (jiwer).
- :mod:`tokenspeech.eval.judge`: an offline intelligibility judge (Whisper base
  through faster-whisper) that transcribes synthesised speech and scores it.
- :mod:`tokenspeech.eval.codec_metrics`: PESQ (wide/narrow band), STOI and
  log-mel distance between a reference and a degraded signal, after delay
  alignment.
- :mod:`tokenspeech.eval.timing`: real-time factor measurement and thread limits.
- :mod:`tokenspeech.eval.cli`: ``tokenspeech eval wer|judge|codec``.

Heavy dependencies (jiwer, faster-whisper, pesq, pystoi) come with the
``tokenspeech[eval]`` extra and are imported only inside the functions that
need them.
"""
