"""English text normalisation: written form -> spoken form.

``normalize_text`` turns what people write (digits, currency, ordinals, years,
abbreviations, typographic quotes and dashes) into the words a speaker says,
keeping case and the punctuation that shapes prosody. It is used on every
sentence before synthesis, so the corpus transcript is exactly what was spoken.

``transcript_form`` reduces spoken-form text to what ASR predicts: lower-case
letters, apostrophes and single spaces.

Numbers are read with ``num2words`` (a maintained library) rather than rules of
our own; the regular expressions here only decide *which* reading applies.
"""

from __future__ import annotations

import re
import unicodedata

from tokenspeech.errors import TextError

# Typographic characters -> their plain equivalents. Dashes become a comma
# pause; ellipses a full stop.
_CHAR_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": " - ", "\u2014": ", ", "\u2015": ", ", "\u2212": "-",
    "\u2026": ". ", "\u00a0": " ", "\u00ad": "",
}

# Abbreviations read the same way wherever they occur (case-sensitive keys).
_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Dr.": "Doctor", "Prof.": "Professor",
    "Sr.": "Senior", "Jr.": "Junior", "St.": "Saint", "Mt.": "Mount", "Gen.": "General",
    "Gov.": "Governor", "Sen.": "Senator", "Rep.": "Representative", "Capt.": "Captain",
    "Col.": "Colonel", "Lt.": "Lieutenant", "Sgt.": "Sergeant", "Rev.": "Reverend",
    "Hon.": "Honorable", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "approx.": "approximately", "Jan.": "January", "Feb.": "February",
    "Aug.": "August", "Sept.": "September", "Oct.": "October", "Nov.": "November",
    "Dec.": "December", "Co.": "Company", "Corp.": "Corporation", "Inc.": "Incorporated",
    "Ltd.": "Limited", "Ave.": "Avenue", "Blvd.": "Boulevard", "U.S.": "U S", "U.S.A.": "U S A",
}
_ABBREVIATION_RE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(k) for k in sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")"
)
_NUMBER_ABBREVIATION_RE = re.compile(r"\bNo\.\s*(?=\d)")

_SYMBOLS = {"&": " and ", "%": " percent", "@": " at ", "+": " plus ", "=": " equals ", "#": " number "}

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?(\s*(?:million|billion|trillion|thousand))?")
_ORDINAL_RE = re.compile(r"\b(\d[\d,]*)(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE_RE = re.compile(r"\b(\d{2,3}0)'?s\b")
_YEAR_RE = re.compile(r"(?<![\d,.])(1[1-9]\d\d|20[1-9]\d)(?!\d|,\d|\.\d)")
_DECIMAL_RE = re.compile(r"(?<![\d,])(\d[\d,]*)\.(\d+)")
_NUMBER_RE = re.compile(r"\d[\d,]*")
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_SPACE_RE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.;:!?])")
_REPEATED_PUNCT_RE = re.compile(r"([,.;:!?])[,.;:!?]+")

_TRANSCRIPT_DROP_RE = re.compile(r"[^a-z' ]+")


def _int(digits: str) -> int:
    return int(digits.replace(",", ""))


def _words(number: int | float, to: str = "cardinal") -> str:
    # imported on first use: the embedded runtime may run without num2words when its text has no numbers
    try:
        from num2words import num2words
    except ImportError as error:
        raise TextError(f"reading the number {number} aloud needs the num2words package "
                        "(pip install num2words), or write it in words") from error
    return num2words(number, lang="en", to=to).replace(",", "")


def _abbreviation(match: re.Match[str]) -> str:
    spoken = _ABBREVIATIONS[match.group(1)]
    # An abbreviation that ends the text also ends the sentence: keep its full stop.
    at_end = not match.string[match.end():].strip(" \"')")
    return spoken + "." if at_end else spoken


def _currency(match: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[match.group(1)]
    whole = _int(match.group(2))
    scale = (match.group(4) or "").strip()
    if scale:
        amount = _words(whole) if match.group(3) is None else _words(float(f"{whole}.{match.group(3)}"))
        return f"{amount} {scale} {many}"
    text = f"{_words(whole)} {one if whole == 1 else many}"
    if match.group(3):
        cents = int(match.group(3).ljust(2, "0"))
        if cents:
            text += f" and {_words(cents)} {sub_one if cents == 1 else sub_many}"
    return text


def _year(match: re.Match[str]) -> str:
    return _words(int(match.group(1)), to="year")


def _decade(match: re.Match[str]) -> str:
    value = int(match.group(1))
    spoken = _words(value, to="year") if value >= 1000 else _words(value)
    # "nineteen sixty" -> "nineteen sixties"; "twenty" -> "twenties"
    return spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f"{_words(hours)} o'clock"
    if minutes < 10:
        return f"{_words(hours)} oh {_words(minutes)}"
    return f"{_words(hours)} {_words(minutes)}"


def _decimal(match: re.Match[str]) -> str:
    digits = " ".join(_words(int(d)) for d in match.group(2))
    return f"{_words(_int(match.group(1)))} point {digits}"


def normalize_text(text: str) -> str:
    """Return the spoken form of English ``text``, keeping case and punctuation.

    >>> normalize_text("Dr. Smith paid $3.50 on May 1st, 1990.")
    'Doctor Smith paid three dollars and fifty cents on May first, nineteen ninety.'
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_CHAR_MAP.get(ch, ch) for ch in text)
    text = _NUMBER_ABBREVIATION_RE.sub("number ", text)
    text = _ABBREVIATION_RE.sub(_abbreviation, text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _TIME_RE.sub(_time, text)
    text = _ORDINAL_RE.sub(lambda m: _words(_int(m.group(1)), to="ordinal"), text)
    text = _DECADE_RE.sub(_decade, text)
    text = _YEAR_RE.sub(_year, text)
    text = _DECIMAL_RE.sub(_decimal, text)
    text = _NUMBER_RE.sub(lambda m: _words(_int(m.group(0))), text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = text.replace("-", " ").replace("/", " ")
    text = _SPACE_RE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    text = _REPEATED_PUNCT_RE.sub(r"\1", text)
    return text.strip(" ,;:")


def transcript_form(text: str) -> str:
    """Reduce spoken-form text to ASR targets: ``[a-z' ]``, single spaces.

    >>> transcript_form("Well, it's Doctor Smith!")
    "well it's doctor smith"
    """
    text = text.lower().replace("-", " ")
    text = _TRANSCRIPT_DROP_RE.sub(" ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w)
