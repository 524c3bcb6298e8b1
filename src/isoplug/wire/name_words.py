"""Reading a name the way a person, or a backend that rewrites names, reads it: as words.

One reading for every rule about which names a sender may not use (the host's logging,
:mod:`isoplug.logs.record_names`, and OpenTelemetry, :mod:`isoplug.otel.reserved_names`):
case ignored, invisible characters (format characters, combining marks) dropped, Cyrillic and
Greek letters that look like Latin ones read as those, compatibility forms folded (a
full-width full stop is a dot). A letter no table lists (Armenian, small capitals, Cyrillic
beyond the table) is read by :func:`lookalike_words` as any one letter, where the reader has a
vocabulary to match it against. Pure functions, no I/O, cheap to import (the runner uses them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["lookalike_words", "normalized", "segments", "words"]

#: Cyrillic and Greek letters (case-folded) that look like Latin ones.
_LOOKALIKES = str.maketrans(
    "\u0430\u0432\u0435\u0451\u04bb\u043d\u0456\u0457\u0458\u043a\u04cf\u043c\u043e\u0440"
    "\u051b\u0441\u0455\u0442\u0443\u0445\u0501\u051d\u0261\u0131\u03b1\u03b2\u03b5\u03b6"
    "\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7",
    "abeehhiijklmopqcstyxdwgiabezhikmnoptyx",
)
_WORD = re.compile(r"[a-z0-9]+")
#: Dropped before reading words: format characters (zero-width space and joiner, soft hyphen,
#: bidi marks) and combining marks (an accent over a letter).
_INVISIBLE = frozenset({"Cf", "Mn", "Me"})


def normalized(key: str) -> str:
    """``key`` folded as the module docstring says, its separators kept."""
    text = unicodedata.normalize("NFKD", key)
    if not text.isascii():
        text = "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    return text.casefold().translate(_LOOKALIKES)


def words(key: str) -> tuple[str, ...]:
    """``key`` as the words a person (or a backend that rewrites names) reads in it."""
    return tuple(_WORD.findall(normalized(key)))


def segments(key: str) -> tuple[tuple[str, ...], ...]:
    """``key`` as the words of each of its dot-separated parts (empty parts left out): the
    path a JSON consumer that reads dotted names as nested fields (ECS, Datadog) reads."""
    parts = (tuple(_WORD.findall(part)) for part in normalized(key).split("."))
    return tuple(part for part in parts if part)


#: A word with wildcards: ``?`` stands for a non-ASCII letter.
_WILD_WORD = re.compile(r"[a-z0-9?]+")


def lookalike_words(key: str, vocabulary: Iterable[str]) -> str | None:
    """``key`` normalized, each word holding a non-ASCII letter read as the word of
    ``vocabulary`` (lower-case ASCII words) it spells with each such letter taken as any one
    letter: ``le\u0475el`` (an Izhitsa for a ``v``) reads ``level``. A word only looks
    like a Latin one if most of its letters are Latin (``\u0438\u043c\u044f``, Russian for
    "name", is no ``msg``): at least as many ASCII letters as others. Other non-ASCII letters
    separate words, as in :func:`words`. None when ``key`` has no non-ASCII letter (it reads
    as :func:`words` reads it)."""
    text = normalized(key)
    if text.isascii():
        return None
    wild = "".join("?" if not c.isascii() and c.isalpha() else c for c in text)
    if "?" not in wild:
        return None
    return _WILD_WORD.sub(lambda found: _match(found.group(), vocabulary), wild)


def _match(word: str, vocabulary: Iterable[str]) -> str:
    unknown = word.count("?")
    if not unknown:
        return word
    latin = sum(c.isalpha() for c in word) - unknown
    if latin >= unknown:
        for known in vocabulary:
            if len(known) == len(word) and all(
                c in ("?", k) for c, k in zip(word, known, strict=True)
            ):
                return known
    return word.replace("?", " ")
