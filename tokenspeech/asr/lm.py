"""The language model the ASR searches fuse: train it, and load the shipped one, a file, or none.

Torch-free (the ONNX runtime uses it too). Either kind answers "which
character next": a character n-gram (:class:`CharNgramLM`) or a word n-gram
read through its lexicon and mixed with one (:class:`WordLexiconLM`, the
shipped ``tokenspeech/assets/asr_lm.npz``), both trained by :func:`train_lm`
on the corpus's training transcripts and optionally the rest of its text
sources' train-split sentences; the header records the kind, the vocabulary,
the text source and the sentence count. A model is used only with an ASR
model of the same character vocabulary.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from tokenspeech.decoding.char_lm import CharNgramLM
from tokenspeech.decoding.word_lm import DEFAULT_MIX
from tokenspeech.decoding.word_lm import KIND as WORD_LM_KIND
from tokenspeech.decoding.word_lm import WordLexiconLM
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.text.vocab import Vocabulary

logger = logging.getLogger(__name__)

DEFAULT_LM = Path(__file__).resolve().parents[1] / "assets" / "asr_lm.npz"
DEFAULT_ORDER = 6
DEFAULT_WORD_ORDER = 3  # docs/asr.md, session 17: a 4-gram was no better on dev and twice the size
NO_LM = "none"


def read_lm(path: Path) -> CharNgramLM | WordLexiconLM:
    """The LM in ``path``, of either kind (its header says which); ``ValueError`` for anything else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            kind = json.loads(bytes(data["header"]).decode()).get("kind")
            return (WordLexiconLM if kind == WORD_LM_KIND else CharNgramLM).from_arrays(data)
    except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot read the language model ({error})") from error


def load_lm(path: str | Path | None, vocabulary: Vocabulary) -> CharNgramLM | WordLexiconLM | None:
    """The LM at ``path``; ``None`` -> the shipped one when present and matching; ``"none"`` -> no LM.

    An explicit file that cannot be read or whose vocabulary differs from
    ``vocabulary`` raises (:class:`ModelLoadError`, :class:`ConfigError`);
    the shipped one is then skipped with a warning instead.
    """
    if path is not None and str(path) == NO_LM:
        return None
    explicit = path is not None
    source = Path(path) if explicit else DEFAULT_LM
    if not source.is_file():
        if explicit:
            raise ModelLoadError(f"language model not found: {source} (give an .npz from `tokenspeech train lm`, "
                                 f"or '{NO_LM}')")
        logger.info("no shipped language model at %s: CTC decodes without one", source)
        return None
    try:
        lm = read_lm(source)
    except ValueError as error:
        if explicit:
            raise ModelLoadError(str(error)) from error
        logger.warning("the shipped language model is unreadable (%s): decoding without it", error)
        return None
    expected = list(vocabulary.symbols)
    if lm.info.get("vocabulary") != expected or lm.vocab_size != len(expected):
        message = (f"the language model {source} was trained for another character vocabulary than this ASR "
                   "model's; train one for it with `tokenspeech train lm`")
        if explicit:
            raise ConfigError(message)
        logger.warning("%s; decoding without it", message)
        return None
    return lm


def corpus_transcripts(corpus: Path, split: str = "train") -> list[str]:
    """The distinct ``transcript`` texts of ``corpus/<split>.jsonl`` (ASR training text), in order.

    A corpus whose ``<split>.jsonl`` is not written yet (``tokenspeech data
    build`` writes it when the split's audio is done) gives its plan's rows of
    that split: the same sentences, known before any audio exists.
    """
    manifest = corpus / f"{split}.jsonl" if corpus.is_dir() else corpus
    plan = corpus / "plan.jsonl"
    texts = _transcripts(manifest, None) if manifest.is_file() else {}
    if not texts and corpus.is_dir() and plan.is_file():
        manifest, texts = plan, _transcripts(plan, split)
    if not manifest.is_file():
        raise ConfigError(f"no manifest at {manifest}")
    if not texts:
        raise ConfigError(f"{manifest} has no transcripts")
    return list(texts)


def _transcripts(manifest: Path, split: str | None) -> dict[str, None]:
    """The distinct transcripts of ``manifest``'s rows (of ``split`` only, when given), in order."""
    texts: dict[str, None] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if split is not None and row.get("split") != split:
                continue  # (the plan's header line has no split either)
            text = row.get("transcript")
            if text is None:
                raise ConfigError(f"{manifest}: a row has no 'transcript' field (build the corpus with tokenspeech)")
            texts[text] = None
    return texts


def source_train_texts(corpus: Path) -> list[str]:
    """Transcripts of every speakable sentence of ``corpus``'s text sources that falls in its train split.

    A corpus synthesises only some of its sources' sentences; the rest are
    free text for the LM. Two filters keep evaluation text out: the split
    rule (``tokenspeech.data.corpus.split_of``: a hash of the transcript and
    the corpus seed, with the seed and fractions from the header of
    ``plan.jsonl``) and every form of every sentence the plan's evaluation
    rows speak (``reserved_sentences``). The second is not redundant: the
    first extension of the corpus of sessions 1-9 split its rows with another
    seed, so 219 of its dev and test sentences hashed to ``train`` under the
    rule, and one dev sentence read differently under today's normaliser.
    """
    from tokenspeech.data.corpus import (DEV_FRACTION, TEST_FRACTION, Utterance, is_reserved, reserved_sentences,
                                         split_of, unique_speakable)
    from tokenspeech.data.sources import default_sources, iter_sentences
    from tokenspeech.text.normalize import transcript_form

    plan = corpus / "plan.jsonl"
    if not plan.is_file():
        raise ConfigError(f"{plan} not found: source text needs a corpus built by `tokenspeech data build`")
    with open(plan, encoding="utf-8") as handle:
        meta = json.loads(handle.readline())
        if "seed" not in meta:
            raise ConfigError(f"{plan}: the first line is not a plan header with the corpus seed")
        reserved = reserved_sentences(Utterance(**json.loads(line)) for line in handle if line.strip())
    kept = []
    for sentence, spoken in unique_speakable(iter_sentences(default_sources(corpus / "text-sources"))):
        transcript = transcript_form(spoken)
        split = split_of(transcript, meta["seed"], meta.get("dev_fraction", DEV_FRACTION),
                         meta.get("test_fraction", TEST_FRACTION))
        if split == "train" and not is_reserved(sentence.text, transcript, reserved):
            kept.append(transcript)
    return kept


def train_lm(corpus: Path, out: Path, vocabulary: Vocabulary, order: int = DEFAULT_ORDER,
             split: str = "train", source_text: bool = False, word_order: int = DEFAULT_WORD_ORDER,
             mix: float = DEFAULT_MIX) -> CharNgramLM | WordLexiconLM:
    """Train on ``corpus``'s ``split`` transcripts and save to ``out`` (.npz). Only that split: the dev,
    test and held-out sentences stay unseen. ``source_text`` adds :func:`source_train_texts`.

    The character ``order``-gram always; with ``word_order`` > 0 also a word
    n-gram over the same text, read through its lexicon and mixed with the
    character model (:class:`WordLexiconLM`, ``mix``): that one is written.
    """
    texts = corpus_transcripts(corpus, split)
    described = f"distinct transcripts of {split}.jsonl"
    if source_text:
        texts = list(dict.fromkeys(texts + source_train_texts(corpus)))
        described += " and every train-split sentence of the corpus's text sources"
    info = {"vocabulary": list(vocabulary.symbols), "text": described, "corpus": str(corpus)}
    lm = CharNgramLM.train((vocabulary.encode(text) for text in texts), order, len(vocabulary.symbols),
                           vocabulary.eos_id, info)
    if word_order > 0:
        (space,) = vocabulary.encode(" ")
        lm = WordLexiconLM.train((vocabulary.encode(text) for text in texts), lm, space, word_order, mix=mix,
                                 info=info)
    lm.save(out)
    return lm
