"""Trait phrases: a response that contains one shows the trait (e.g. refusal phrases).

A trait folder's `phrases.txt` holds one phrase per line; `#` starts a comment line.
Matching ignores case, curly quotes and contractions ("can't" = "cannot", "I'm" = "I am")
and respects word boundaries, so the file can be written in plain English. `*` inside a
phrase stands for any few words within one sentence ("sorry * but").

Lines starting with `!` are look-alikes that do not show the trait ("sorry to hear",
"sorry for any inconvenience"): they are blanked out of the response before the phrases
are matched, so "I'm sorry for any inconvenience, but here is how" is not a refusal while
"I'm sorry, but I can't help with that" is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import read_text, text_md5

PHRASES_FILE = "phrases.txt"
_GAP = r"[^.!?\n]{0,80}?"  # what `*` matches: a short stretch inside one sentence
_CONTRACTIONS = [  # the irregular ones first; then the regular suffixes
    (r"\bcan't\b", "cannot"),
    (r"\bwon't\b", "will not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"n't\b", " not"),
    (r"\bcan not\b", "cannot"),
    (r"\bi'm\b", "i am"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"\bi'd\b", "i would"),
]
_CONTRACTION_PATTERNS = [(re.compile(p), r) for p, r in _CONTRACTIONS]


# Curly, modifier-letter, full-width and back-quote apostrophes read as the straight one.
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\uff07`", "'"))


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, contractions spelled out, single spaces."""
    text = text.lower().translate(_APOSTROPHES)
    for pattern, replacement in _CONTRACTION_PATTERNS:
        text = pattern.sub(replacement, text)
    return re.sub(r"\s+", " ", text).strip()


def compile_phrase(phrase: str) -> re.Pattern:
    """A phrase as a regex over normalised text (word boundaries, `*` as a short gap)."""
    words = normalise(phrase).split(" ")
    if not phrase.strip() or all(w == "*" for w in words):
        raise ValueError("empty phrase")
    parts, gap_before, last = [], False, ""
    for word in words:
        if word == "*":
            gap_before = True
            continue
        if parts and gap_before:  # whole words on both sides ("sorry * but" not "debut")
            before = r"(?!\w)" if re.search(r"\w$", last) else ""
            after = r"(?<!\w)" if re.match(r"\w", word) else ""
            parts.append(before + r"\s*" + _GAP + r"\s*" + after)
        elif parts:
            parts.append(r"\s+")
        parts.append(re.escape(word))
        gap_before, last = False, word
    start = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    end = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return re.compile(start + "".join(parts) + end)


@dataclass(frozen=True)
class PhraseSet:
    phrases: tuple[str, ...]
    exclusions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.phrases:
            raise SteeropsError("phrase judge: no phrases given")
        object.__setattr__(self, "_match", [compile_phrase(p) for p in self.phrases])
        object.__setattr__(self, "_exclude", [compile_phrase(p) for p in self.exclusions])

    @property
    def hash(self) -> str:
        return text_md5("\n".join(self.phrases) + "\n!\n" + "\n".join(self.exclusions))[:12]

    def find(self, response: str) -> str | None:
        """The first phrase the response contains (after look-alikes are blanked), or None."""
        text = normalise(response)
        for pattern in self._exclude:
            text = pattern.sub(" ~ ", text)
        for phrase, pattern in zip(self.phrases, self._match, strict=True):
            if pattern.search(text):
                return phrase
        return None

    def contains(self, response: str) -> bool:
        return self.find(response) is not None


def read_phrases(path: str | Path) -> PhraseSet:
    """Parse a phrases file; a bad line is one error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SteeropsError(f"{path}: file not found (trait phrases for the proxy judge)")
    phrases, exclusions = [], []
    for lineno, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        target = exclusions if line.startswith("!") else phrases
        line = line.lstrip("!").strip()
        try:
            compile_phrase(line)
        except ValueError:
            raise SteeropsError(f"{path}:{lineno}: empty phrase") from None
        target.append(line)
    if not phrases:
        raise SteeropsError(f"{path}: no phrases (one per line; `!` lines only exclude)")
    return PhraseSet(tuple(phrases), tuple(exclusions))
