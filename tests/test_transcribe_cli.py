"""``tokenspeech transcribe``: inputs, bad files, resume, subtitles, batching, long recordings.

A fake recogniser stands in for the model (injected through ``batch.make_recognizer``);
the audio files are real.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import soundfile as sf

from tokenspeech.asr import batch, inputs, output
from tokenspeech.asr.base import Transcript, WordTiming
from tokenspeech.asr.segment import find_speech_segments
from tokenspeech.cli import main
from tokenspeech.errors import ModelLoadError

from test_segment import burst_signal

RATE = 16000


class FakeRecognizer:
    """Says "file of N seconds" with evenly spaced words; records every batch it sees."""

    sample_rate = RATE

    def __init__(self, max_seconds: float = 30.0, fail_on: Callable[[np.ndarray], bool] | None = None,
                 interrupt_after: int | None = None) -> None:
        self.max_seconds = max_seconds
        self.fail_on = fail_on
        self.interrupt_after = interrupt_after
        self.calls: list[list[float]] = []

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append([len(a) / RATE for a in audios])
        if self.fail_on is not None and any(self.fail_on(a) for a in audios):
            raise RuntimeError("model exploded")
        return [self._say(len(a) / RATE) for a in audios]

    @staticmethod
    def _say(seconds: float) -> Transcript:
        words = f"file of {round(seconds)} seconds".split()
        slot = seconds / len(words)
        return Transcript(" ".join(words), tuple(WordTiming(w, i * slot, (i + 1) * slot) for i, w in enumerate(words)))


class BurstRecognizer(FakeRecognizer):
    """One word per tone burst, timed by frame energy, so stitched times can be checked against the truth."""

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        self.calls.append([len(a) / RATE for a in audios])
        results = []
        for audio in audios:
            hop = RATE // 100
            frames = len(audio) // hop
            loud = np.sqrt(np.mean(audio[: frames * hop].reshape(frames, hop) ** 2, axis=1)) > 0.05
            edges = np.diff(np.concatenate(([0], loud.astype(int), [0])))
            spans = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))
            words = tuple(WordTiming("burst", s * hop / RATE, e * hop / RATE) for s, e in spans)
            results.append(Transcript(" ".join(w.word for w in words), words))
        return results


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of good files plus broken, empty and silent ones; the working directory is ``tmp_path``."""
    (tmp_path / "a" / "sub").mkdir(parents=True)
    sf.write(tmp_path / "a" / "one.wav", tone(1.0), RATE)
    sf.write(tmp_path / "a" / "two.flac", tone(2.0), RATE)
    sf.write(tmp_path / "a" / "sub" / "three.wav", tone(3.0), RATE)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(RATE, dtype=np.float32), RATE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def use(monkeypatch: pytest.MonkeyPatch, recognizer: FakeRecognizer) -> FakeRecognizer:
    monkeypatch.setattr(batch, "make_recognizer", lambda decoder, model_path, threads, lm, beam, precision: recognizer)
    return recognizer


def transcribe(*args: str) -> int:
    return main(["transcribe", "--no-progress", *args])


def rows(path: Path) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    found = [json.loads(line) for line in lines]
    assert len({r["path"] for r in found}) == len(found), "a path appears twice"
    return {r["path"]: r for r in found}


def test_every_input_gets_a_row_with_its_path_as_given(corpus: Path, monkeypatch, capsys) -> None:
    use(monkeypatch, FakeRecognizer())
    status = transcribe("a/", "bad.wav", "empty.wav", "silent.wav", "missing.wav", "-o", "out.jsonl")
    assert status == 1
    out = rows(corpus / "out.jsonl")
    assert set(out) == {"a/one.wav", "a/two.flac", "a/sub/three.wav", "bad.wav", "empty.wav", "silent.wav",
                        "missing.wav"}
    assert out["a/two.flac"]["text"] == "file of 2 seconds" and out["a/two.flac"]["error"] is None
    assert out["a/two.flac"]["duration"] == pytest.approx(2.0)
    starts = [w["start"] for w in out["a/sub/three.wav"]["words"]]
    assert starts == sorted(starts) and out["a/sub/three.wav"]["words"][-1]["end"] == pytest.approx(3.0)
    assert "no such file" in out["missing.wav"]["error"]
    assert "empty" in out["empty.wav"]["error"]
    assert "silent" in out["silent.wav"]["error"]
    assert out["bad.wav"]["error"] and out["bad.wav"]["text"] == "" and out["bad.wav"]["words"] == []
    summary = capsys.readouterr().err
    assert "3 file(s) transcribed, 4 failed" in summary
    assert "missing.wav: no such file" in summary and "real time" in summary


def test_globs_lists_manifests_and_duplicates(corpus: Path, monkeypatch) -> None:
    use(monkeypatch, FakeRecognizer())
    (corpus / "list.txt").write_text("# my files\n\na/two.flac\n./a/one.wav\n")
    (corpus / "m").mkdir()
    sf.write(corpus / "m" / "x.wav", tone(1.0), RATE)
    (corpus / "m" / "set.jsonl").write_text(json.dumps({"path": "x.wav", "id": "u1", "text": "hello"}) + "\n")
    status = transcribe("a/**/*.wav", "@list.txt", "m/set.jsonl", "a/one.wav", "-o", "out.jsonl")
    assert status == 0
    out = rows(corpus / "out.jsonl")
    assert set(out) == {"a/one.wav", "a/sub/three.wav", "a/two.flac", "x.wav"}
    assert out["x.wav"]["id"] == "u1" and out["x.wav"]["reference"] == "hello"
    assert "id" not in out["a/one.wav"]


def test_nothing_matched_is_a_usage_error(corpus: Path, monkeypatch, capsys) -> None:
    use(monkeypatch, FakeRecognizer())
    assert transcribe("nothing/*.wav", "-o", "out.jsonl") == 2
    assert "no audio files matched" in capsys.readouterr().err


def test_existing_output_is_refused_unless_overwritten(corpus: Path, monkeypatch, capsys) -> None:
    use(monkeypatch, FakeRecognizer())
    (corpus / "out.jsonl").write_text('{"path": "old.wav"}\n')
    assert transcribe("a", "-o", "out.jsonl") == 2
    assert "--resume" in capsys.readouterr().err
    assert transcribe("a", "-o", "out.jsonl", "--overwrite") == 0
    assert set(rows(corpus / "out.jsonl")) == {"a/one.wav", "a/two.flac", "a/sub/three.wav"}


def test_resume_after_a_kill_transcribes_each_input_once(corpus: Path, monkeypatch) -> None:
    for n in range(6):
        sf.write(corpus / "a" / f"extra{n}.wav", tone(0.5 + n * 0.25), RATE)
    use(monkeypatch, FakeRecognizer(interrupt_after=3))
    assert transcribe("a", "-o", "out.jsonl", "--batch-size", "1") == 130
    first = (corpus / "out.jsonl").read_text().splitlines()
    assert len(first) == 3
    # the process died while writing the fourth line
    with (corpus / "out.jsonl").open("a") as handle:
        handle.write('{"path": "a/extra1.wav", "text": "fi')
    second = use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "-o", "out.jsonl", "--resume", "--batch-size", "1") == 0
    out = rows(corpus / "out.jsonl")
    assert len(out) == 9 and all(r["error"] is None for r in out.values())
    assert len(second.calls) == 6  # the three finished files were not transcribed again
    assert (corpus / "out.jsonl").read_text().splitlines()[:3] == first


def test_resume_after_truncation_mid_line(corpus: Path, monkeypatch) -> None:
    use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "-o", "out.txt") == 0
    text = (corpus / "out.txt").read_text()
    (corpus / "out.txt").write_text(text[: text.index("\n") + 5])  # keep one line and a piece of the next
    again = use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "-o", "out.txt", "--resume") == 0
    lines = (corpus / "out.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["a/one.wav", "a/sub/three.wav", "a/two.flac"]
    assert sum(len(call) for call in again.calls) == 2


def test_recognizer_failure_is_isolated_and_retried_on_request(corpus: Path, monkeypatch, capsys) -> None:
    use(monkeypatch, FakeRecognizer(fail_on=lambda a: len(a) == 2 * RATE))
    assert transcribe("a", "-o", "out.jsonl") == 1
    out = rows(corpus / "out.jsonl")
    assert out["a/two.flac"]["error"] == "recognition failed (RuntimeError: model exploded)"
    assert out["a/one.wav"]["error"] is None and out["a/sub/three.wav"]["error"] is None
    idle = use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "-o", "out.jsonl", "--resume") == 1  # the failure is still in the output
    assert idle.calls == [] and "--retry-failed" in capsys.readouterr().err
    assert transcribe("a", "-o", "out.jsonl", "--resume", "--retry-failed") == 0
    out = rows(corpus / "out.jsonl")
    assert len(out) == 3 and out["a/two.flac"]["text"] == "file of 2 seconds"


def test_too_long_files_fail_with_a_reason(corpus: Path, monkeypatch) -> None:
    use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "-o", "out.jsonl", "--max-duration", "1.5") == 1
    out = rows(corpus / "out.jsonl")
    assert "too long" in out["a/two.flac"]["error"] and out["a/one.wav"]["error"] is None


def test_stdout_txt_and_jsonl(corpus: Path, monkeypatch, capsys) -> None:
    use(monkeypatch, FakeRecognizer())
    assert transcribe("a/one.wav", "a/two.flac", "--format", "txt") == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["a/one.wav\tfile of 1 seconds",
                                                            "a/two.flac\tfile of 2 seconds"]
    assert transcribe("a/one.wav") == 0
    assert json.loads(capsys.readouterr().out)["path"] == "a/one.wav"


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d{3})"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d{3})"


def _seconds(groups: Sequence[str]) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_subtitles(text: str, vtt: bool) -> list[tuple[float, float, str]]:
    """Cues of an SRT/WebVTT file, checking numbering, timestamp format and order on the way."""
    if vtt:
        assert text.startswith("WEBVTT\n\n")
        text = text[len("WEBVTT\n\n"):]
    pattern = re.compile(f"^{VTT_TIME if vtt else SRT_TIME} --> {VTT_TIME if vtt else SRT_TIME}$")
    cues, previous_end = [], 0.0
    for number, block in enumerate(filter(None, text.split("\n\n")), 1):
        lines = block.split("\n")
        if not vtt:
            assert lines.pop(0) == str(number)
        match = pattern.match(lines[0])
        assert match, lines[0]
        start, end = _seconds(match.groups()[:4]), _seconds(match.groups()[4:])
        assert previous_end <= start < end
        assert lines[1:] and all(lines[1:])
        cues.append((start, end, " ".join(lines[1:])))
        previous_end = end
    return cues


def test_subtitle_cues_respect_length_and_duration() -> None:
    words = tuple(WordTiming(f"word{i}", i * 0.4, i * 0.4 + 0.3) for i in range(60))
    words += (WordTiming("late", 30.0, 30.5),)
    cues = output.subtitle_cues(output.FileResult("x.wav", " ".join(w.word for w in words), 31.0, words))
    assert all(len(c.text) <= 42 and c.end - c.start <= 7.0 for c in cues)
    assert " ".join(c.text for c in cues).split() == [w.word for w in words]
    for vtt, text in ((False, output.format_srt(cues)), (True, output.format_vtt(cues))):
        parsed = parse_subtitles(text, vtt)
        assert len(parsed) == len(cues) and parsed[-1] == (30.0, 30.5, "late")
    long = output.subtitle_cues(output.FileResult("y.wav", "no timings here", 3725.5))
    assert output.format_srt(long).splitlines()[1] == "00:00:00,000 --> 00:20:41,833"


def test_srt_file_and_vtt_folder(corpus: Path, monkeypatch) -> None:
    use(monkeypatch, FakeRecognizer())
    assert transcribe("a/sub/three.wav", "-o", "three.srt") == 0
    cues = parse_subtitles((corpus / "three.srt").read_text(), vtt=False)
    assert " ".join(c[2] for c in cues) == "file of 3 seconds" and cues[-1][1] == pytest.approx(3.0)
    assert transcribe("a", "bad.wav", "--format", "vtt", "-o", "subs/") == 1
    made = sorted(str(p.relative_to(corpus / "subs")) for p in (corpus / "subs").rglob("*.vtt"))
    assert made == ["a/one.vtt", "a/sub/three.vtt", "a/two.vtt"]  # none for the broken file
    assert parse_subtitles((corpus / "subs" / "a" / "two.vtt").read_text(), vtt=True)
    assert transcribe("a", "--format", "vtt", "-o", "subs/") == 2  # exists
    again = use(monkeypatch, FakeRecognizer())
    assert transcribe("a", "../" + corpus.name + "/empty.wav", "--format", "vtt", "-o", "subs", "--resume") == 1
    assert again.calls == []  # the three are done; the empty file fails before recognition
    assert transcribe("a", "--format", "srt") == 2  # several inputs need a folder


def test_batches_are_sorted_by_length_and_respect_the_budget(corpus: Path, monkeypatch) -> None:
    lengths = [1.0, 5.0, 2.0, 8.0, 3.0, 0.5, 4.0, 12.0, 2.5]
    (corpus / "b").mkdir()
    for n, seconds in enumerate(lengths):
        sf.write(corpus / "b" / f"f{n}.wav", tone(seconds), RATE)
    fake = use(monkeypatch, FakeRecognizer())
    assert transcribe("b", "-o", "out.jsonl", "--batch-size", "3", "--batch-seconds", "10", "--workers", "2") == 0
    seen = [s for call in fake.calls for s in call]
    assert sorted(seen) == pytest.approx(sorted(lengths))
    assert seen == sorted(seen, reverse=True)
    for call in fake.calls:
        assert len(call) <= 3 and (sum(call) <= 10.0 or len(call) == 1)


def test_plan_puts_unknown_durations_last() -> None:
    jobs = [batch.FileJob(inputs.AudioInput(name, Path(name)), seconds)
            for name, seconds in [("a", 1.0), ("b", None), ("c", 9.0), ("d", 3.0)]]
    groups = batch.plan_batches(jobs, max_items=2, max_seconds=10.0)
    assert [[j.input.path for j in g] for g in groups] == [["c"], ["d", "a"], ["b"]]


def test_long_recording_is_segmented_and_word_times_stitched(corpus: Path, monkeypatch) -> None:
    wav, bursts = burst_signal(90.0)
    sf.write(corpus / "long.flac", wav, RATE)
    fake = use(monkeypatch, BurstRecognizer(max_seconds=20.0))
    assert transcribe("long.flac", "-o", "out.jsonl") == 0
    assert all(seconds <= 20.0 for call in fake.calls for seconds in call)
    assert sum(len(call) for call in fake.calls) >= 5
    words = rows(corpus / "out.jsonl")["long.flac"]["words"]
    assert len(words) == len(bursts)
    segments = find_speech_segments(wav, RATE, 20.0)
    previous = 0.0
    for word, (start, end) in zip(words, bursts):
        assert previous <= word["start"] < word["end"]
        assert word["start"] == pytest.approx(start, abs=0.05) and word["end"] == pytest.approx(end, abs=0.05)
        assert any(s / RATE <= word["start"] and word["end"] <= e / RATE for s, e in segments)
        previous = word["end"]


def test_missing_model_code_is_a_model_load_error(monkeypatch, corpus: Path, capsys) -> None:
    import tokenspeech.asr

    monkeypatch.setitem(sys.modules, "tokenspeech.asr.recognizer", None)
    monkeypatch.delattr(tokenspeech.asr, "recognizer", raising=False)
    with pytest.raises(ModelLoadError, match="not available"):
        batch.make_recognizer("ctc", None, 0)
    assert transcribe("a", "-o", "out.jsonl") == 2
    assert "ASR models are not available" in capsys.readouterr().err
