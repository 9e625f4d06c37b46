"""Corpus planning: which sentence is spoken by which voice, in which split.

Planning is pure and deterministic given the seed: sentences are normalised,
filtered to speakable ones, de-duplicated, shuffled, split by a hash of their
text (so a sentence is in exactly one split, whatever the voice) and dealt to
voice families until each family's hours (estimated from text length) are met.
Synthesis (``build.py``) then measures the real durations.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tokenspeech.data.sources import SourceSentence
from tokenspeech.data.voices import HELDOUT_VOICES, VOICE_FAMILIES, VoiceSpec
from tokenspeech.text.normalize import normalize_text, transcript_form

SPLITS = ("train", "dev", "test")
# Fractions of sentences held out, decided by a hash of the transcript.
DEV_FRACTION = 0.02
TEST_FRACTION = 0.02
CHARS_PER_SECOND = 18.0  # spoken-form characters per second after trimming (measured: joe 18.4, espeak 17-18)

_SPEAKABLE_RE = re.compile(r"^[A-Za-z][A-Za-z ,.;:!?']*$")
_INNER_PUNCT_RE = re.compile(r"[A-Za-z][.:;!?][A-Za-z]")  # URLs, file names, initials run together
MIN_WORDS, MAX_WORDS, MAX_CHARS, MAX_WORD_LETTERS = 3, 30, 220, 20


@dataclass(frozen=True)
class Utterance:
    """One planned recording: a sentence, a voice, and how the voice speaks it."""

    id: str
    split: str
    text: str  # as written in the source
    spoken: str  # normalised spoken form, exactly what the voice was given
    transcript: str  # ASR target: lower-case [a-z' ]
    source: str
    licence: str
    voice: str
    engine: str
    engine_voice: str
    rate: int
    pitch: int

    def to_json(self) -> dict:
        return asdict(self)


def speakable_form(sentence: str) -> str | None:
    """Spoken form of ``sentence`` if it is one we want to record, else ``None``.

    Kept: 3-30 words, at most 220 characters, only letters, apostrophes and
    ``, . ; : ! ?`` after normalisation, not shouted (<30 % capitals), no word
    over 20 letters. Quotes and brackets are dropped; a final stop is added.
    """
    spoken = normalize_text(sentence).replace('"', "").replace("(", "").replace(")", "")
    spoken = " ".join(spoken.split()).strip(" '")
    if not spoken or not _SPEAKABLE_RE.match(spoken) or _INNER_PUNCT_RE.search(spoken):
        return None
    words = spoken.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or len(spoken) > MAX_CHARS:
        return None
    letters = [c for c in spoken if c.isalpha()]
    if sum(c.isupper() for c in letters) > 0.3 * len(letters):
        return None
    if max(len(w.strip(",.;:!?'")) for w in words) > MAX_WORD_LETTERS:
        return None
    if spoken[-1] not in ".!?":
        spoken = spoken.rstrip(",;:") + "."
    return spoken


def split_of(transcript: str, seed: int, dev_fraction: float = DEV_FRACTION,
             test_fraction: float = TEST_FRACTION) -> str:
    """The split of a sentence: a stable hash of its transcript and the seed."""
    digest = hashlib.sha1(f"{seed}|{transcript}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + dev_fraction:
        return "dev"
    return "train"


def reserved_sentences(plan: Iterable[Utterance]) -> frozenset[str]:
    """Every form of every sentence that a plan's evaluation rows (dev, test, held-out) speak.

    Each row's *stored* split is the truth, not :func:`split_of`: the first
    corpus extension split its new rows with another seed, so 219 dev and test
    sentences of /work/corpus hash to ``train`` under the corpus seed. A row
    gives three keys: its stored transcript, the transcript today's normaliser
    derives from its text (the normaliser changed after the first build: "2016"
    is now "twenty sixteen") and the text as written. A candidate sentence is
    reserved when its text or its transcript is among them (see
    :func:`is_reserved`).
    """
    keys: set[str] = set()
    for utterance in plan:
        if utterance.split == "train":
            continue
        keys.update((utterance.transcript, utterance.text))
        spoken = speakable_form(utterance.text)
        if spoken is not None:
            keys.add(transcript_form(spoken))
    return frozenset(keys)


SEEN_IN_TRAINING = Path(__file__).with_name("seen_in_training.txt")


def seen_in_training(path: Path = SEEN_IN_TRAINING) -> frozenset[str]:
    """Transcripts that shipped models were trained on although the split rule puts them in dev or test.

    The corpus of sessions 1-9 split its first extension with another seed
    (see :func:`reserved_sentences`), so some of its training sentences hash to
    dev or test. That corpus is gone, but models trained on it ship; a corpus
    planned anew must not evaluate them on those sentences. The list was
    reconstructed from the planning code of that time (how: the file's header).
    """
    if not path.exists():
        return frozenset()
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def is_reserved(text: str, transcript: str, reserved: frozenset[str]) -> bool:
    """Whether a sentence (as written, and its transcript) belongs to :func:`reserved_sentences`."""
    return text in reserved or transcript in reserved


def unique_speakable(sentences: Iterable[SourceSentence]) -> list[tuple[SourceSentence, str]]:
    """(sentence, spoken form) for every speakable sentence, first occurrence of each transcript."""
    seen: set[str] = set()
    kept = []
    for sentence in sentences:
        spoken = speakable_form(sentence.text)
        if spoken is None:
            continue
        key = transcript_form(spoken)
        if key in seen:
            continue
        seen.add(key)
        kept.append((sentence, spoken))
    return kept


def estimated_seconds(spoken: str, rate: int = 175) -> float:
    return len(spoken) / CHARS_PER_SECOND * 175 / rate


def _utterance(sentence: SourceSentence, spoken: str, spec: VoiceSpec, split: str, rng: random.Random) -> Utterance:
    rate = rng.randint(*spec.rate)
    pitch = rng.randint(*spec.pitch)
    transcript = transcript_form(spoken)
    uid = hashlib.sha1(f"{spec.name}|{transcript}".encode()).hexdigest()[:12]
    return Utterance(uid, split, sentence.text, spoken, transcript, sentence.source, sentence.licence,
                     spec.name, spec.engine, spec.engine_voice, rate, pitch)


def plan_corpus(
    sentences: list[tuple[SourceSentence, str]],
    hours: dict[str, float],
    seed: int = 0,
    dev_fraction: float = DEV_FRACTION,
    test_fraction: float = TEST_FRACTION,
    not_for_evaluation: frozenset[str] = frozenset(),
) -> list[Utterance]:
    """Deal shuffled sentences to voice families until each has its hours.

    ``hours`` maps a family name of ``VOICE_FAMILIES`` to target hours. Each
    sentence goes to one family only, chosen with probability proportional to
    the hours that family still lacks. A sentence whose transcript is in
    ``not_for_evaluation`` (see :func:`seen_in_training`) and that the split
    rule puts in dev or test is left out. Returns utterances in synthesis order.
    """
    unknown = set(hours) - set(VOICE_FAMILIES)
    if unknown:
        raise ValueError(f"unknown voice families {sorted(unknown)}; known: {sorted(VOICE_FAMILIES)}")
    rng = random.Random(seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    remaining = {name: h * 3600.0 for name, h in hours.items() if h > 0}
    plan: list[Utterance] = []
    for index in order:
        if not remaining:
            break
        sentence, spoken = sentences[index]
        names = sorted(remaining)
        family = rng.choices(names, weights=[remaining[n] for n in names])[0]
        spec = rng.choice(VOICE_FAMILIES[family])
        transcript = transcript_form(spoken)
        split = split_of(transcript, seed, dev_fraction, test_fraction)
        if split != "train" and transcript in not_for_evaluation:
            continue
        utterance = _utterance(sentence, spoken, spec, split, rng)
        plan.append(utterance)
        remaining[family] -= estimated_seconds(spoken, utterance.rate)
        if remaining[family] <= 0:
            del remaining[family]
    return plan


def plan_heldout(plan: list[Utterance], count: int, seed: int = 0) -> list[Utterance]:
    """Test-split sentences of ``plan`` spoken again by voices no model trains on."""
    rng = random.Random(seed + 1)
    test = sorted((u for u in plan if u.split == "test"), key=lambda u: u.id)[:count]
    heldout = []
    for i, utterance in enumerate(test):
        spec = HELDOUT_VOICES[i % len(HELDOUT_VOICES)]
        source = SourceSentence(utterance.text, utterance.source, utterance.licence)
        heldout.append(_utterance(source, utterance.spoken, spec, "heldout", rng))
    return heldout


def summarise_sources(utterances: Iterable[Utterance]) -> Iterator[tuple[str, str, int]]:
    """(source, licence, sentence count) for the data card."""
    counts: dict[tuple[str, str], int] = {}
    for u in utterances:
        counts[(u.source, u.licence)] = counts.get((u.source, u.licence), 0) + 1
    for (source, licence), n in sorted(counts.items()):
        yield source, licence, n
