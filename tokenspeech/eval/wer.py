"""Word and character error rates, with one documented English normaliser.

Scoring rules (``score_text``), applied identically to references and
hypotheses before any edit distance is computed:

1. Written form -> spoken form with :func:`tokenspeech.text.normalize.normalize_text`:
   digits, currency, ordinals, years, times, decades and common abbreviations
   are spelled out, so ``"1990"`` and ``"nineteen ninety"`` score the same,
   ``"$5"`` matches ``"five dollars"`` and ``"Dr."`` matches ``"doctor"``.
2. :func:`tokenspeech.text.normalize.transcript_form`: lower case; every
   character other than ``a-z``, the apostrophe and space becomes a space
   (punctuation, hyphens, digits left over, symbols): ``"well-known"`` ->
   ``"well known"``.
3. Apostrophes are deleted: ``"don't"`` == ``"dont"``, ``"it's"`` == ``"its"``.
4. Whitespace is collapsed to single spaces; ends are stripped.

Not done: British/American spelling unification, contraction expansion
(``"don't"`` != ``"do not"``), filler-word removal, and non-English text
(letters outside ``a-z`` are dropped, so score English only).

Rates are corpus-level (Levenshtein alignment by jiwer): WER is the total of
word substitutions + deletions + insertions over all reference words, CER the
same over reference characters of the normalised text, spaces included. A
reference that normalises to nothing is still scored: every hypothesis word
counts as an insertion. When the whole corpus has no reference words the rate
is 0.0 if the hypotheses are empty too and 1.0 otherwise (jiwer's convention).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from tokenspeech.errors import TextError
from tokenspeech.text.normalize import normalize_text, transcript_form

logger = logging.getLogger(__name__)


def score_text(text: str) -> str:
    """Return ``text`` in scoring form (see the module docstring for the rules).

    >>> score_text("It didn't happen in 1990!")
    'it didnt happen in nineteen ninety'
    """
    spoken = transcript_form(normalize_text(text))
    return " ".join(spoken.replace("'", "").split())


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level error counts and rates.

    ``wer`` = (substitutions + deletions + insertions) / ``ref_words``;
    ``cer`` is the same ratio over characters (its own edit counts are not
    kept). ``utterances`` is the number of reference/hypothesis pairs.
    """

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    ref_chars: int
    utterances: int

    @property
    def word_errors(self) -> int:
        """Total word edits: substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form, for reports."""
        return {
            "wer": self.wer, "cer": self.cer, "substitutions": self.substitutions,
            "deletions": self.deletions, "insertions": self.insertions,
            "ref_words": self.ref_words, "ref_chars": self.ref_chars, "utterances": self.utterances,
        }


EMPTY_RATES = ErrorRates(wer=0.0, cer=0.0, substitutions=0, deletions=0, insertions=0,
                         ref_words=0, ref_chars=0, utterances=0)


def _rate(errors: int, total: int) -> float:
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total


def error_rates(
    refs: Sequence[str],
    hyps: Sequence[str],
    *,
    normalize: Callable[[str], str] | None = score_text,
) -> ErrorRates:
    """Corpus-level WER and CER of ``hyps`` against ``refs`` (paired by position).

    Both sides go through ``normalize`` first (default :func:`score_text`;
    ``None`` scores the text as given, split on whitespace). Raises
    :class:`TextError` when the two sequences differ in length.
    """
    if len(refs) != len(hyps):
        raise TextError(
            f"{len(refs)} references but {len(hyps)} hypotheses; give exactly one hypothesis per reference"
        )
    if not refs:
        return EMPTY_RATES
    import jiwer  # the [eval] extra; imported here to keep `tokenspeech --help` fast

    clean = normalize or (lambda text: " ".join(text.split()))
    ref_texts = [clean(r) for r in refs]
    hyp_texts = [clean(h) for h in hyps]
    words = jiwer.process_words(ref_texts, hyp_texts)
    chars = jiwer.process_characters(ref_texts, hyp_texts)
    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return ErrorRates(
        wer=_rate(word_errors, ref_words),
        cer=_rate(char_errors, ref_chars),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        ref_words=ref_words,
        ref_chars=ref_chars,
        utterances=len(refs),
    )
