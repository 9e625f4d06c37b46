"""The character n-gram LM, its files, and its fusion into CTC prefix beam search."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tokenspeech.asr.lm import NO_LM, load_lm, train_lm
from tokenspeech.decoding.char_lm import CharNgramLM
from tokenspeech.decoding.word_lm import WordLexiconLM
from tokenspeech.decoding.ctc import CtcBeamOptions, ctc_greedy, ctc_prefix_beam_search
from tokenspeech.errors import ConfigError, ModelLoadError
from tokenspeech.text.vocab import Vocabulary, character_vocabulary

FIXTURE = Path(__file__).parent / "fixtures" / "corpus"
VOCAB = character_vocabulary()
TEXTS = ["the cat sat", "the cat ran", "a cat sat on the mat", "the dog sat"] * 3


def small_lm(order: int = 4) -> CharNgramLM:
    return CharNgramLM.train((VOCAB.encode(t) for t in TEXTS), order, len(VOCAB.symbols), VOCAB.eos_id,
                             {"vocabulary": list(VOCAB.symbols)})


def test_every_distribution_sums_to_one_and_follows_the_counts() -> None:
    lm = small_lm()
    for previous in ("", "the c", "the ca", "zzz", "q"):
        probs = np.exp(lm.log_probs(lm.history(VOCAB.encode(previous))))
        assert probs.shape == (len(VOCAB.symbols),) and abs(probs.sum() - 1.0) < 1e-9 and (probs > 0).all()
    after_the_c = lm.log_probs(lm.history(VOCAB.encode("the c")))
    assert int(np.argmax(after_the_c)) == VOCAB.encode("a")[0]
    after_sat = lm.log_probs(lm.history(VOCAB.encode("the cat sat")))
    assert int(np.argmax(after_sat)) == lm.boundary  # sentences end after "sat" in the training text
    assert lm.sentence_log_prob(VOCAB.encode("the cat sat")) > lm.sentence_log_prob(VOCAB.encode("the tac sat"))


def test_unigram_model_is_the_smoothed_character_frequency() -> None:
    lm = CharNgramLM.train([[6, 6, 7]], 1, 8, 3)  # "a a b" then the boundary
    probs = np.exp(lm.log_probs(()))
    # Witten-Bell: (count + types / V) / (total + types), total 4 (a a b </s>), 3 types
    assert probs[6] == pytest.approx((2 + 3 / 8) / 7) and probs[0] == pytest.approx((3 / 8) / 7)


def test_save_and_load_round_trip_and_bad_files(tmp_path: Path) -> None:
    lm = small_lm()
    path = lm.save(tmp_path / "lm.npz")
    again = CharNgramLM.load(path)
    for previous in ("", "the ", "a cat s"):
        history = lm.history(VOCAB.encode(previous))
        np.testing.assert_array_equal(again.log_probs(history), lm.log_probs(history))
    assert again.info["vocabulary"] == list(VOCAB.symbols) and again.info["sentences"] == len(TEXTS)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read the character LM"):
        CharNgramLM.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", header=np.frombuffer(b'{"kind": "something else"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="not a tokenspeech character LM"):
        CharNgramLM.load(tmp_path / "other.npz")


def test_load_lm_explicit_shipped_none_and_vocabulary_checks(tmp_path: Path) -> None:
    path = small_lm().save(tmp_path / "lm.npz")
    assert load_lm(path, VOCAB) is not None
    assert load_lm(NO_LM, VOCAB) is None
    with pytest.raises(ModelLoadError, match="not found"):
        load_lm(tmp_path / "missing.npz", VOCAB)
    other = Vocabulary.from_symbols("abc")
    with pytest.raises(ConfigError, match="another character vocabulary"):
        load_lm(path, other)
    assert load_lm(None, other) is None  # the shipped LM does not fit: decode without it
    shipped = load_lm(None, VOCAB)
    assert isinstance(shipped, WordLexiconLM) and shipped.order == 3 and shipped.char_lm.order == 6


def test_beam_search_with_the_lm_picks_the_likely_spelling() -> None:
    """Frames that slightly prefer "the cat tat": the LM's knowledge of "sat" wins, greedy keeps the acoustics."""
    lm = small_lm()
    target, acoustic_best = "the cat sat", "the cat tat"
    frames = []
    for wanted, heard in zip(target, acoustic_best):
        for _ in range(2):
            row = np.full(len(VOCAB.symbols), 1e-3)
            row[VOCAB.encode(heard)[0]] = 0.5
            row[VOCAB.encode(wanted)[0]] += 0.4
            frames.append(row / row.sum())
        blank = np.full(len(VOCAB.symbols), 1e-3)
        blank[0] = 1.0
        frames.append(blank / blank.sum())
    log_probs = np.log(np.array(frames))
    assert VOCAB.decode(list(ctc_greedy(log_probs).tokens)) == acoustic_best
    assert VOCAB.decode(list(ctc_prefix_beam_search(log_probs, CtcBeamOptions())[0].tokens)) == acoustic_best
    fused = ctc_prefix_beam_search(log_probs, CtcBeamOptions(beam_size=8, blank_skip=0.999), lm)
    assert VOCAB.decode(list(fused[0].tokens)) == target
    assert fused[0].score >= fused[-1].score


def position_logits(wanted: str, heard: str) -> np.ndarray:
    """Parallel-decoder logits ``[positions, V]``: each position prefers its ``heard`` character (0.5) a little
    over its ``wanted`` one (0.2), every other token far behind."""
    rows = np.full((len(wanted), len(VOCAB.symbols)), -6.0)
    for row, want, hear in zip(rows, wanted, heard):
        row[VOCAB.encode(want)[0]] = 0.2
        row[VOCAB.encode(hear)[0]] = 0.5
    return rows


def ctc_log_probs_sure_of(text: str) -> np.ndarray:
    """CTC head log-probabilities ``[2 * len(text), V]``: each character on one frame, then a blank frame."""
    frames = []
    for char in text:
        for token in (VOCAB.encode(char)[0], VOCAB.pad_id):
            probs = np.full(len(VOCAB.symbols), 1e-4)
            probs[token] = 1.0
            frames.append(np.log(probs / probs.sum()))
    return np.array(frames)


def test_position_beam_with_the_lm_picks_the_likely_spelling() -> None:
    """Paraformer positions that slightly prefer "the cat tat": with the LM the beam spells "sat"; with weight 0
    it is each position's best; excluded tokens are never chosen, however likely."""
    from tokenspeech.decoding.position_lm import PositionBeamOptions, position_beam_search

    lm = small_lm()
    target, acoustic_best = "the cat sat", "the cat tat"
    logits = position_logits(target, acoustic_best)
    assert VOCAB.decode(list(logits.argmax(axis=-1))) == acoustic_best
    acoustic_only, with_lm = PositionBeamOptions(lm_weight=0.0), PositionBeamOptions(lm_weight=1.0)
    assert VOCAB.decode(list(position_beam_search(logits, lm, acoustic_only).tokens)) == acoustic_best
    assert VOCAB.decode(list(position_beam_search(logits, lm, with_lm).tokens)) == target
    logits[:, VOCAB.unk_id] = 5.0
    excluded = PositionBeamOptions(lm_weight=1.0, excluded=(VOCAB.unk_id,))
    assert VOCAB.decode(list(position_beam_search(logits, lm, excluded).tokens)) == target
    assert position_beam_search(logits[:0], lm, excluded).tokens == ()
    with pytest.raises(ValueError):
        PositionBeamOptions(beam_size=0)


def test_position_beam_space_penalty_splits_a_word_only_where_the_space_is_clear() -> None:
    """A position that prefers a space by a little ("the  at") keeps its letter under a penalty of 1; the clear
    space after "the" (6.5 log units over the rest) stays a space."""
    from tokenspeech.decoding.position_lm import PositionBeamOptions, position_beam_search

    lm, space = small_lm(), VOCAB.encode(" ")[0]
    logits = position_logits("the cat", "the  at")  # at "c" the decoder slightly prefers a space
    plain = PositionBeamOptions(lm_weight=0.0, space_id=space)
    assert VOCAB.decode(list(position_beam_search(logits, lm, plain).tokens)) == "the  at"
    penalised = PositionBeamOptions(lm_weight=0.0, space_id=space, space_penalty=1.0)
    assert VOCAB.decode(list(position_beam_search(logits, lm, penalised).tokens)) == "the cat"
    with pytest.raises(ValueError, match="space_id"):
        PositionBeamOptions(space_penalty=1.0)
    with pytest.raises(ValueError, match="space_penalty"):
        PositionBeamOptions(space_id=space, space_penalty=-1.0)


def test_position_beam_with_ctc_scores_follows_the_ctc_head_where_the_positions_hesitate() -> None:
    """Positions that slightly prefer "the cat tat", a CTC head sure of "the cat sat": with the CTC prefix
    scores joined in the beam spells what the CTC head heard; at weight 0 the scorer is ignored."""
    from tokenspeech.decoding.joint_ctc import CtcPrefixScorer
    from tokenspeech.decoding.position_lm import PositionBeamOptions, position_beam_search

    lm = small_lm()
    target, acoustic_best = "the cat sat", "the cat tat"
    logits = position_logits(target, acoustic_best)
    scorer = CtcPrefixScorer(ctc_log_probs_sure_of(target), VOCAB.pad_id, VOCAB.eos_id)
    alone = PositionBeamOptions(lm_weight=0.0)
    assert VOCAB.decode(list(position_beam_search(logits, lm, alone, scorer).tokens)) == acoustic_best
    joint = PositionBeamOptions(lm_weight=0.0, ctc_weight=0.5)
    assert VOCAB.decode(list(position_beam_search(logits, lm, joint, scorer).tokens)) == target
    assert VOCAB.decode(list(position_beam_search(logits, lm, joint).tokens)) == acoustic_best  # no scorer, no CTC
    with pytest.raises(ValueError, match="ctc_weight"):
        PositionBeamOptions(ctc_weight=1.5)


def test_position_beam_may_leave_a_position_empty_where_cif_fired_once_too_often() -> None:
    """Six positions that read "shands" and a CTC head that heard "hands": without skips the beam must spell six
    characters; allowed one skip, it leaves the first position empty and the positions of the kept tokens say
    so. Skipping is never free: at a huge penalty the six-character reading stays."""
    from tokenspeech.decoding.joint_ctc import CtcPrefixScorer
    from tokenspeech.decoding.position_lm import PositionBeamOptions, position_beam_search

    lm = small_lm()
    logits = position_logits("shands", "shands")
    scorer = CtcPrefixScorer(ctc_log_probs_sure_of("hands"), VOCAB.pad_id, VOCAB.eos_id)
    joint = PositionBeamOptions(lm_weight=0.0, ctc_weight=0.5)
    assert len(position_beam_search(logits, lm, joint, scorer).tokens) == 6
    skipping = position_beam_search(logits, lm, replace(joint, max_skips=1, skip_penalty=1.0), scorer)
    assert VOCAB.decode(list(skipping.tokens)) == "hands" and skipping.positions == (1, 2, 3, 4, 5)
    costly = position_beam_search(logits, lm, replace(joint, max_skips=1, skip_penalty=100.0), scorer)
    assert len(costly.tokens) == 6
    with pytest.raises(ValueError, match="max_skips"):
        PositionBeamOptions(max_skips=-1)


def test_position_beam_with_ctc_windows_around_the_cif_spans_decides_as_the_whole_utterance_does() -> None:
    """The CTC head heard character n at frame 2n; with each position's span there, windows of one frame
    around it spell "the cat sat" as the whole-utterance scores do. Spans that put every position at the
    start of the utterance hide what the CTC head heard, so the beam no longer spells it (the windows matter)."""
    from tokenspeech.decoding.joint_ctc import CtcPrefixScorer
    from tokenspeech.decoding.position_lm import PositionBeamOptions, position_beam_search

    lm = small_lm()
    target, acoustic_best = "the cat sat", "the cat tat"
    logits = position_logits(target, acoustic_best)
    scorer = CtcPrefixScorer(ctc_log_probs_sure_of(target), VOCAB.pad_id, VOCAB.eos_id)
    joint = PositionBeamOptions(lm_weight=0.0, ctc_weight=0.5, max_skips=1, skip_penalty=4.0)
    spans = [(2 * n, 2 * n) for n in range(len(target))]
    whole = position_beam_search(logits, lm, joint, scorer, spans)  # no ctc_window: spans unused
    windowed = position_beam_search(logits, lm, replace(joint, ctc_window=1), scorer, spans)
    assert VOCAB.decode(list(whole.tokens)) == VOCAB.decode(list(windowed.tokens)) == target
    assert windowed.positions == tuple(range(len(target)))
    misplaced = position_beam_search(logits, lm, replace(joint, ctc_window=0), scorer, [(0, 0)] * len(target))
    assert VOCAB.decode(list(misplaced.tokens)) != target
    with pytest.raises(ValueError, match="spans"):
        position_beam_search(logits, lm, joint, scorer, spans[:-1])
    with pytest.raises(ValueError, match="ctc_window"):
        PositionBeamOptions(ctc_window=-1)


def test_train_lm_command_on_the_fixture_corpus(tmp_path: Path) -> None:
    out = tmp_path / "lm.npz"
    done = subprocess.run([sys.executable, "-m", "tokenspeech", "train", "lm", "--corpus", str(FIXTURE),
                           "--out", str(out), "--order", "4", "--word-order", "0"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "4-gram character LM on 8 sentences" in done.stdout
    lm = load_lm(out, VOCAB)
    assert isinstance(lm, CharNgramLM) and lm.info["text"] == "distinct transcripts of train.jsonl"
    words = subprocess.run([sys.executable, "-m", "tokenspeech", "train", "lm", "--corpus", str(FIXTURE),
                            "--out", str(out), "--order", "4"], capture_output=True, text=True, check=False)
    assert words.returncode == 0, words.stderr
    assert "3-gram word LM" in words.stdout and "over a 4-gram character LM" in words.stdout
    lm = load_lm(out, VOCAB)
    assert isinstance(lm, WordLexiconLM) and lm.info["sentences"] == 8 and lm.char_lm.order == 4
    bad = subprocess.run([sys.executable, "-m", "tokenspeech", "train", "lm", "--corpus", str(tmp_path),
                          "--out", str(out)], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "no manifest" in bad.stderr


def test_train_lm_keeps_dev_and_test_sentences_out(tmp_path: Path) -> None:
    lm = train_lm(FIXTURE, tmp_path / "lm.npz", VOCAB, order=3)
    assert lm.info["sentences"] == 8  # train.jsonl only


def test_streaming_ctc_with_the_lm_ends_where_the_offline_search_over_the_same_frames_does() -> None:
    import torch
    from tiny_models import speech_like, tiny_asr_bundle

    from tokenspeech.asr.recognizer import RecognizerOptions, TorchRecognizer

    bundle = tiny_asr_bundle()
    with torch.no_grad():  # the random model would say nothing: keep CTC off blank most of the time
        bundle.model.ctc.bias[0] = -4.0
    recognizer = TorchRecognizer(bundle, RecognizerOptions(decoder="ctc"), load_lm(None, bundle.vocabulary))
    assert recognizer.lm is not None
    audio = speech_like(2.0, seed=3)
    session = recognizer.stream("ctc")
    interim = [session.accept_audio(audio[start:start + 3200]).text for start in range(0, audio.size, 3200)]
    final = session.finish()
    # offline: the same chunk-masked encoder frames, searched whole
    mel, lengths = recognizer.features([audio])
    encoded = recognizer.backend.encode(mel, lengths, recognizer.options.chunk, recognizer.options.left_chunks)
    log_probs = encoded.ctc_log_probs[0, : encoded.lengths[0]]
    search = recognizer.beam_options(recognizer.options.beam(True))
    expected = ctc_prefix_beam_search(log_probs, search, recognizer.lm)[0].tokens
    assert final.text and final.text == bundle.vocabulary.decode(list(expected))
    assert final.words and all(w.start < w.end for w in final.words)  # aligned at the end
    assert interim[-1]  # interim results come while audio arrives
    greedy = bundle.vocabulary.decode(list(ctc_greedy(log_probs).tokens))
    assert greedy != final.text  # the LM changed something


class _FakeSource:
    name, licence = "fake", "test"

    def __init__(self, texts: list[str]) -> None:
        self._texts = texts

    def texts(self):
        return iter(self._texts)


def test_source_text_adds_only_train_split_sentences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsynthesised source sentences join the LM text when the corpus seed puts them in train, never
    when they hash to dev/test or an evaluation row of the plan speaks them: whatever their hash says, and
    also when today's normaliser reads the row's text differently from its stored transcript."""
    import json
    import shutil
    from dataclasses import fields

    from tokenspeech.asr import lm as lm_module
    from tokenspeech.data import sources
    from tokenspeech.data.corpus import Utterance, speakable_form, split_of
    from tokenspeech.text.normalize import transcript_form

    corpus = tmp_path / "corpus"
    shutil.copytree(FIXTURE, corpus)
    names = [f.name for f in fields(Utterance)]
    rows = [{k: row[k] for k in names} for split in ("train", "dev", "test")
            for row in map(json.loads, (corpus / f"{split}.jsonl").read_text().splitlines())]
    reread = "By 1997, the old sailor had counted every gull."  # an older normaliser said "one thousand ..."
    rows.append(dict(rows[-1], id="renormalised", split="dev", text=reread, spoken="By one thousand nine hundred "
                     "and ninety seven, the old sailor had counted every gull.",
                     transcript="by one thousand nine hundred and ninety seven the old sailor had counted every gull"))
    header = {"seed": 0, "dev_fraction": 0.1, "test_fraction": 0.1}
    (corpus / "plan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [header, *rows]))
    candidates = [f"The old sailor counted {word} gulls above the harbour wall." for word in
                  ("three", "seven", "eleven", "twenty", "forty", "ninety", "several", "many", "few", "some",
                   "nine", "five", "six", "eight", "ten", "twelve")]
    by_split: dict[str, list[str]] = {}
    for text in candidates:
        by_split.setdefault(split_of(transcript_form(speakable_form(text)), 0, 0.1, 0.1), []).append(text)
    assert by_split.get("train") and (by_split.get("test") or by_split.get("dev"))
    evaluation = json.loads((corpus / "test.jsonl").read_text().splitlines()[0])
    assert split_of(evaluation["transcript"], 0, 0.1, 0.1) == "train"  # only the plan's stored split keeps it out
    assert split_of(transcript_form(speakable_form(reread)), 0, 0.1, 0.1) == "train"
    monkeypatch.setattr(sources, "default_sources",
                        lambda cache: [_FakeSource(candidates + [evaluation["spoken"], reread])])

    texts = lm_module.source_train_texts(corpus)
    assert texts == [transcript_form(speakable_form(t)) for t in by_split["train"]]
    assert evaluation["transcript"] not in texts
    assert transcript_form(speakable_form(reread)) not in texts
    lm = train_lm(corpus, tmp_path / "lm.npz", VOCAB, order=3, source_text=True)
    assert lm.info["sentences"] == 8 + len(by_split["train"])
    assert "text sources" in lm.info["text"]
    (corpus / "plan.jsonl").unlink()
    with pytest.raises(ConfigError, match="plan.jsonl"):
        lm_module.source_train_texts(corpus)


def test_lm_text_comes_from_the_plan_before_the_split_is_built(tmp_path: Path) -> None:
    """`data build` writes train.jsonl last; the plan already names every train sentence."""
    from tokenspeech.asr.lm import corpus_transcripts

    rows = [{"split": "train", "transcript": "the cat sat"}, {"split": "dev", "transcript": "a dev sentence"},
            {"split": "train", "transcript": "the dog ran"}, {"split": "train", "transcript": "the cat sat"}]
    (tmp_path / "plan.jsonl").write_text("\n".join([json.dumps({"seed": 0})] + [json.dumps(r) for r in rows]) + "\n")
    assert corpus_transcripts(tmp_path) == ["the cat sat", "the dog ran"]
    (tmp_path / "train.jsonl").write_text("")  # started, nothing recorded yet
    assert corpus_transcripts(tmp_path) == ["the cat sat", "the dog ran"]
    (tmp_path / "train.jsonl").write_text(json.dumps({"transcript": "recorded only"}) + "\n")
    assert corpus_transcripts(tmp_path) == ["recorded only"]  # a written manifest wins
    (tmp_path / "plan.jsonl").unlink()
    (tmp_path / "train.jsonl").unlink()
    with pytest.raises(ConfigError, match="no manifest"):
        corpus_transcripts(tmp_path)
