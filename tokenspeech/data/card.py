"""Render a corpus's ``stats.json`` as the Markdown tables of its data card."""

from __future__ import annotations

from tokenspeech.data.voices import DIPHONE_VOICES, HELDOUT_VOICES, TEACHER, TTS_VOICES, VARIETY_VOICES

SPLIT_ORDER = ("train", "dev", "test", "heldout")


def _voice_role(voice: str) -> str:
    if voice == TEACHER.name:
        return "teacher (piper joe, VITS)"
    if voice in {v.name for v in TTS_VOICES}:
        return "TTS voice (espeak-ng, fixed rate/pitch)"
    if voice in {v.name for v in VARIETY_VOICES}:
        return "ASR variety (espeak-ng, random rate/pitch)"
    if voice in {v.name for v in DIPHONE_VOICES}:
        return "ASR variety (diphone: flite/festival, random rate/pitch)"
    if voice in {v.name for v in HELDOUT_VOICES}:
        return "held out (evaluation only)"
    return "other"


def render_tables(stats: dict) -> str:
    """Hours per voice and split, sentence counts and sources, as Markdown."""
    lines = ["| voice | role | " + " | ".join(SPLIT_ORDER) + " | total h |",
             "|---|---|" + "---:|" * (len(SPLIT_ORDER) + 1)]
    for voice, by_split in stats["hours_by_voice"].items():
        cells = [f"{by_split.get(s, 0.0):.2f}" for s in SPLIT_ORDER]
        lines.append(f"| {voice} | {_voice_role(voice)} | " + " | ".join(cells)
                     + f" | {sum(by_split.values()):.2f} |")
    lines += ["", f"Total: **{stats['hours_total']:.2f} h**.", "",
              "| split | utterances | distinct sentences |", "|---|---:|---:|"]
    for split in SPLIT_ORDER:
        if split in stats["utterances_by_split"]:
            lines.append(f"| {split} | {stats['utterances_by_split'][split]} | "
                         f"{stats.get('sentences_by_split', {}).get(split, '')} |")
    lines += ["", f"Vocabulary: {stats['word_types']} word types, {stats['phoneme_symbols']} phoneme symbols.", ""]
    if "sources" in stats:
        lines += ["| source | licence | utterances | hours |", "|---|---|---:|---:|"]
        for name, info in stats["sources"].items():
            lines.append(f"| {name} | {info['licence']} | {info['utterances']} | {info['hours']:.2f} |")
    return "\n".join(lines) + "\n"
