"""Corpus builder: sentence filtering, deterministic planning, splits, resumable synthesis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokenspeech.data.build import BuildOptions, load_or_make_plan, synthesize_plan, write_manifests
from tokenspeech.data.corpus import estimated_seconds, plan_corpus, speakable_form, split_of, unique_speakable
from tokenspeech.data.sources import FortunesSource, SourceSentence, WordnetSource, split_sentences
from tokenspeech.data.voices import DIPHONE_VOICES, make_synthesizer, target_f0
from tokenspeech.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "corpus"


def sentences(n: int) -> list[tuple[SourceSentence, str]]:
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    raw = [SourceSentence(f"The {words[i % 12]} met {i} {words[(i * 7) % 12]}s today.", "test", "CC0")
           for i in range(n)]
    return unique_speakable(raw)


def test_split_sentences_respects_abbreviations() -> None:
    text = 'Mr. Smith came home. He said "hello!" Then he left? Yes.'
    assert split_sentences(text) == ["Mr. Smith came home.", 'He said "hello!"', "Then he left?", "Yes."]


@pytest.mark.parametrize(
    "raw, spoken",
    [
        ("He paid $5 for 2 apples.", "He paid five dollars for two apples."),
        ('"Quoted speech," she said', "Quoted speech, she said."),
        ("Too short.", None),
        ("THIS IS ALL SHOUTING HERE.", None),
        ("See http://example.com now please.", None),
        ("A list: (a) one; [b] two.", None),
        ("word " * 40, None),
    ],
)
def test_speakable_form(raw: str, spoken: str | None) -> None:
    assert speakable_form(raw) == spoken


def test_unique_speakable_drops_duplicate_transcripts() -> None:
    raw = [SourceSentence(t, "s", "l") for t in ("It is three cats.", "It is 3 cats!", "It is three dogs.")]
    assert [s for _, s in unique_speakable(raw)] == ["It is three cats.", "It is three dogs."]


def test_plan_is_deterministic_and_meets_hours() -> None:
    pool = sentences(3000)
    hours = {"joe": 0.1, "espeak-variety": 0.05}
    first, second = plan_corpus(pool, hours, seed=3), plan_corpus(pool, hours, seed=3)
    assert first == second
    assert first != plan_corpus(pool, hours, seed=4)
    assert {u.voice for u in first if u.engine == "piper"} == {"joe"}
    variety = [u for u in first if u.engine == "espeak"]
    assert len({u.voice for u in variety}) > 5 and len({u.rate for u in variety}) > 5
    for family, target in hours.items():
        seconds = sum(estimated_seconds(u.spoken, u.rate) for u in first if (u.voice == "joe") == (family == "joe"))
        assert target * 3600 <= seconds < target * 3600 + 20


def test_no_sentence_in_two_splits() -> None:
    plan = plan_corpus(sentences(3000), {"joe": 0.2, "espeak-us": 0.1}, seed=0, dev_fraction=0.1,
                       test_fraction=0.1)
    split_by_text: dict[str, set[str]] = {}
    for u in plan:
        split_by_text.setdefault(u.transcript, set()).add(u.split)
    assert all(len(s) == 1 for s in split_by_text.values())
    assert {u.split for u in plan} == {"train", "dev", "test"}
    assert split_of("some text", 0) == split_of("some text", 0)


def test_unknown_voice_family_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown voice families"):
        BuildOptions(out=tmp_path, hours=(("nobody", 1.0),))


def test_debian_sources_yield_sentences() -> None:
    if not Path("/usr/share/games/fortunes/fortunes").exists():
        pytest.skip("Debian fortunes not installed (make install-deps installs it)")
    assert sum(1 for _ in FortunesSource().texts()) > 1000
    assert sum(1 for _ in WordnetSource().texts()) > 10000


def test_build_is_resumable(tmp_path: Path) -> None:
    """Synthesise, lose some recordings as a kill would, resume: nothing lost, nothing twice."""
    from tokenspeech.data.corpus import plan_heldout

    plan = plan_corpus(sentences(200), {"espeak-us": 0.004, "espeak-variety": 0.004}, seed=1,
                       dev_fraction=0.2, test_fraction=0.2)
    plan += plan_heldout(plan, 2, seed=1)
    done = synthesize_plan(plan, tmp_path, workers=2, progress=False)
    assert len(done) == len(plan)
    lost = plan[0]
    (tmp_path / done[lost.id]["path"]).unlink()
    lines = (tmp_path / "done.jsonl").read_text().splitlines()
    (tmp_path / "done.jsonl").write_text("\n".join(lines[:-1]) + '\n{"id": "cut-in-the-mid')
    done = synthesize_plan(plan, tmp_path, workers=1, progress=False)
    stats = write_manifests(plan, done, tmp_path)
    assert stats["finished"] == stats["planned"] == len(plan)
    rows = [json.loads(l) for s in ("train", "dev", "test", "heldout") for l in (tmp_path / f"{s}.jsonl").open()]
    assert sorted(r["id"] for r in rows) == sorted(u.id for u in plan)
    for row in rows:
        info = sf.info(str(tmp_path / row["path"]))
        assert info.samplerate == 16000 and abs(info.duration - row["duration"]) < 0.01
        assert row["phonemes"] and row["transcript"] == row["transcript"].lower()


def test_extend_keeps_recordings_and_tops_up_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspeech.data import build

    monkeypatch.setattr(build, "_read_sentences", lambda options: sentences(400))
    options = BuildOptions(out=tmp_path, hours=(("espeak-us", 0.003),), heldout=0, workers=1, progress=False)
    first = build.load_or_make_plan(options)
    done = synthesize_plan(first, tmp_path, workers=1, progress=False)
    wider = BuildOptions(out=tmp_path, hours=(("espeak-us", 0.009),), heldout=0, workers=1, progress=False,
                         extend=True)
    second = build.load_or_make_plan(wider)
    assert second[: len(first)] == first and len(second) > len(first)
    assert {u.split for u in second[len(first):]} == {"train"}  # evaluation splits stay as they were
    assert len({u.transcript for u in second}) == len(second)
    assert build.planned_hours(second, done)["espeak-us"] >= 0.009
    assert build.load_or_make_plan(wider) == second  # nothing missing: nothing added


def test_extend_never_takes_an_evaluation_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan row's stored split is the truth: an extension skips every sentence an evaluation row speaks,
    also when the sentence hashes to train, and also when today's normaliser reads its text differently
    from the stored transcript; and it does not re-record a train sentence under a new reading."""
    from dataclasses import replace

    from tokenspeech.data import build
    from tokenspeech.text.normalize import transcript_form

    pool = sentences(200)
    plan = plan_corpus(pool[:20], {"espeak-us": 0.01}, seed=0)
    template = plan[0]
    in_train = [(sentence, spoken) for sentence, spoken in pool[20:]
                if split_of(transcript_form(spoken), 0) == "train"]
    hashed, _ = in_train[0]  # stored as test by an older rule
    reread = SourceSentence("In 2016, the harbour wall was rebuilt.", "test", "CC0")  # once read "two thousand ..."
    again = SourceSentence("By 1997, the old sailor had counted every gull.", "test", "CC0")
    assert all(split_of(transcript_form(speakable_form(s.text)), 0) == "train" for s in (hashed, reread, again))
    old_reading = {reread.text: "in two thousand and sixteen the harbour wall was rebuilt",
                   again.text: "by one thousand nine hundred and ninety seven the old sailor had counted every gull"}
    plan += [replace(template, id="t1", split="test", text=hashed.text, transcript=transcript_form(in_train[0][1])),
             replace(template, id="d1", split="dev", text=reread.text, transcript=old_reading[reread.text]),
             replace(template, id="r1", split="train", text=again.text, transcript=old_reading[again.text])]
    candidates = [*in_train, *((s, speakable_form(s.text)) for s in (reread, again))]
    monkeypatch.setattr(build, "_read_sentences", lambda options: candidates)
    options = BuildOptions(out=tmp_path, hours=(("espeak-us", 1.0),), heldout=0, workers=1, progress=False,
                           extend=True)
    extended, _ = build.extend_plan(plan, {"seed": 0}, options)
    added = extended[len(plan):]
    assert len(added) == len(in_train) - 1  # every candidate but the three already spoken
    assert {u.text for u in added}.isdisjoint({hashed.text, reread.text, again.text})


def test_sentences_seen_in_training_never_enter_evaluation() -> None:
    from tokenspeech.text.normalize import transcript_form

    pool = sentences(600)
    plan = plan_corpus(pool, {"espeak-us": 1.0}, seed=0, dev_fraction=0.2, test_fraction=0.2)
    held = [u.transcript for u in plan if u.split != "train"][:5]
    trained = next(u.transcript for u in plan if u.split == "train")
    kept = plan_corpus(pool, {"espeak-us": 1.0}, seed=0, dev_fraction=0.2, test_fraction=0.2,
                       not_for_evaluation=frozenset([*held, trained]))
    transcripts = {u.transcript for u in kept}
    assert transcripts.isdisjoint(held)  # left out, not moved to train (a model trained on them; rule says eval)
    assert trained in transcripts  # a train sentence stays
    assert len(kept) == len(plan) - len(held)
    assert all(u.transcript == transcript_form(u.spoken) for u in kept)


def test_new_corpus_starts_from_the_shipped_plan_when_options_match(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspeech.data import build

    monkeypatch.setattr(build, "_read_sentences", lambda options: sentences(400))
    shipped_from = BuildOptions(out=tmp_path / "a", hours=(("espeak-us", 0.003),), heldout=1, progress=False,
                                dev_fraction=0.2, test_fraction=0.2, shipped_plan=None)
    plan = build.load_or_make_plan(shipped_from)
    build.write_plan(tmp_path / "a" / "plan.jsonl", tmp_path / "shipped.jsonl.gz")
    monkeypatch.setattr(build, "_read_sentences", lambda options: sentences(401))  # the sources changed since
    same = BuildOptions(out=tmp_path / "b", hours=(("espeak-us", 0.003),), heldout=1, progress=False,
                        dev_fraction=0.2, test_fraction=0.2, shipped_plan=tmp_path / "shipped.jsonl.gz")
    assert build.load_or_make_plan(same) == plan
    assert build.load_or_make_plan(same) == plan  # and it resumes from its own copy
    replanned = BuildOptions(out=tmp_path / "c", hours=(("espeak-us", 0.003),), heldout=1, progress=False,
                             dev_fraction=0.2, test_fraction=0.2, shipped_plan=None)
    assert build.load_or_make_plan(replanned) != plan
    other = BuildOptions(out=tmp_path / "d", hours=(("espeak-us", 0.004),), heldout=1, progress=False,
                         dev_fraction=0.2, test_fraction=0.2, shipped_plan=tmp_path / "shipped.jsonl.gz")
    assert build.load_or_make_plan(other) != plan  # other hours: not the shipped plan


def test_build_records_only_the_asked_splits_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspeech.data import build

    monkeypatch.setattr(build, "_read_sentences", lambda options: sentences(300))
    options = BuildOptions(out=tmp_path, hours=(("espeak-us", 0.01),), heldout=2, workers=1, progress=False,
                           dev_fraction=0.2, test_fraction=0.2, splits=("test", "heldout"), shipped_plan=None)
    stats = build.build_corpus(options)
    plan = build.load_or_make_plan(options)
    planned = {s: sum(u.split == s for u in plan) for s in ("train", "dev", "test", "heldout")}
    assert stats["utterances_by_split"] == {"heldout": 2, "test": planned["test"]}
    assert stats["unfinished_by_split"] == {"dev": planned["dev"], "train": planned["train"]}
    assert (tmp_path / "train.jsonl").read_text() == ""
    with pytest.raises(ValueError, match="splits"):
        BuildOptions(out=tmp_path, splits=("valid",))


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("text2wave")), reason="flite and festival needed")
@pytest.mark.parametrize("name", [spec.name for spec in DIPHONE_VOICES])
def test_diphone_voices_speak_at_the_asked_rate_and_pitch(name: str) -> None:
    spec = next(s for s in DIPHONE_VOICES if s.name == name)
    synth = make_synthesizer(spec)
    text = "The ship sailed at dawn. The quick brown fox jumps over the lazy dog."
    slow, rate = synth.synthesize(text, rate=140, pitch=50)
    fast, _ = synth.synthesize(text, rate=210, pitch=50)
    assert slow.ndim == 1 and rate in (8000, 16000) and np.abs(slow).max() > 0.01
    assert 1.3 < len(slow) / len(fast) < 1.7  # duration stretch 175/140 vs 175/210 = 1.5
    low = median_f0(synth.synthesize(text, rate=175, pitch=35)[0], rate)
    high = median_f0(synth.synthesize(text, rate=175, pitch=75)[0], rate)
    assert 1.3 < high / low < 2.2  # mean F0 141 Hz vs 81 Hz asked


def median_f0(wav: np.ndarray, rate: int) -> float:
    import librosa

    f0, _, _ = librosa.pyin(wav.astype(np.float64), fmin=40, fmax=300, sr=rate)
    return float(np.nanmedian(f0))


def test_target_f0_keeps_the_voice_at_pitch_50() -> None:
    assert target_f0(50) is None
    assert target_f0(25) == pytest.approx(70.7) and target_f0(75) == pytest.approx(141.4)


def test_resume_with_other_options_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plan.jsonl").write_text(json.dumps({"seed": 5, "hours": [["joe", 1.0]]}) + "\n")
    with pytest.raises(ValueError, match="was planned with"):
        load_or_make_plan(BuildOptions(out=tmp_path, hours=(("joe", 2.0),), seed=5))


def test_fixture_corpus_is_consistent() -> None:
    rows = [json.loads(l) for s in ("train", "dev", "test", "heldout") for l in (FIXTURE / f"{s}.jsonl").open()]
    assert len(rows) >= 10
    assert {r["voice"] for r in rows} >= {"joe", "espeak-us"}
    for row in rows:
        assert (FIXTURE / row["path"]).exists()


def test_cli_build_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    assert main(["data", "stats", str(FIXTURE)]) == 0
    assert '"hours_total"' in capsys.readouterr().out
    assert main(["data", "card", str(FIXTURE)]) == 0
    card = capsys.readouterr().out
    assert "| joe | teacher" in card and "| sotu | public domain" in card
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "build the corpus first" in capsys.readouterr().err
    assert main(["data", "build", "--out", str(tmp_path), "--voices", "joe=abc"]) == 2
    assert "FAMILY=HOURS" in capsys.readouterr().err


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
