"""Making text from outside this process safe to put into its logs and exception messages.

The one sanitizer: text from a runner, a plugin or a peer that has not authenticated goes
through these functions before it reaches any record or error message. It lives in the wire
layer (pure functions, no I/O) so that every layer above can use it.

Three threats, three rules:

- **Terminal escapes, control and invisible characters** (``ESC[2J``, backspace, bidi
  overrides, zero-width spaces) could rewrite, reorder or hide what an operator sees: every
  C0/C1 control character except tab and newline, DEL, the Unicode line/paragraph separators
  and every *format* character (category Cf: bidi controls and marks, zero-width spaces, word
  joiners, the BOM, interlinear annotation marks, stray tag characters...) are shown as
  ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN`` escapes. Format characters that ordinary text
  needs pass, as they change neither direction nor what is shown: the zero-width non-joiner
  and joiner (U+200C, U+200D: Persian spelling, Indic conjuncts, emoji sequences), the soft
  hyphen (U+00AD), and tag characters within an emoji flag (U+1F3F4, at most seven tags and
  the cancel tag: a subdivision flag's); variation selectors are marks, never escaped. The
  bidi marks (LRM, RLM, ALM) stay escaped: invisible, yet strong letters for the bidi
  algorithm, a pair of them reverses numbers and what lies between them without one visible
  right-to-left letter (docs/security.md says more).
- **Forged log lines**: a message containing ``"\\n2026-01-01 INFO app.db: ..."`` would look
  like a separate record of another logger. Every continuation line that does not already start
  with white space is indented by two spaces, so no line from a plugin can start at column 0 —
  where every record of every usual format starts. (Indented traceback lines are untouched,
  but in a chained traceback, whose later parts move right whole: see ``clean_block``.)
- **Size**: texts are capped; a cut is marked with how many characters of the text received
  were cut. A text that arrives already cut by its sender's isoplug (marked ``... [truncated N
  characters in the emitting process]`` at its end) keeps that count, the sender's own, beside
  the one of this cut: ``... [truncated 229434 characters here and 9740566 in the emitting
  process]``. The count said "here" is exact (in characters of the text received, whatever the
  escaping added); the other is what the sender says, as the words say, and is only taken up
  as a plain number (at most 15 digits).

Logger names get a stricter treatment: only letters and digits of any script, combining marks
that follow one, and ``_-.:`` survive (each run of anything else becomes one ``_``), empty
components are removed, and the length is capped.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "IN_EMITTING_PROCESS",
    "cap_text",
    "clean_block",
    "clean_logger_name",
    "clean_message",
    "clean_path",
    "clean_text",
    "cut_mark",
]

_ESCAPED = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
#: Every format character (category Cf) of Unicode 16, and U+2065, reserved for more: bidi
#: controls, zero-width characters, U+FEFF, U+180E, U+FFF9-FFFB, tags... invisible, so able to
#: hide or reorder text. Listed rather than read from unicodedata at import (a scan of every
#: code point takes 0.15 s); tests/test_sanitize_units.py checks that none of this Python's
#: is missing.
_FORMAT_CHARACTERS = [
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
]
#: The format characters ordinary text needs, which change neither direction nor what is
#: shown (see the module docstring): the soft hyphen, the zero-width non-joiner and joiner.
#: Tag characters pass only within an emoji flag (:data:`_EMOJI_FLAG`).
FORMAT_CHARACTERS_KEPT = frozenset({0xAD, 0x200C, 0x200D})
_ESCAPED += [
    code
    for first, last in _FORMAT_CHARACTERS
    for code in range(first, last + 1)
    if code not in FORMAT_CHARACTERS_KEPT
]
# Lone surrogates (a file name that is not UTF-8, decoded with surrogateescape): no encoder of
# a UTF-8 log handler can write them, so one would make the handler fail on the record.
_ESCAPED += range(0xD800, 0xE000)
_ESCAPE_TABLE = {
    code: (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )
    for code in _ESCAPED
}
#: The base of every emoji tag sequence (Unicode's flags of England, Scotland, Wales...).
_BLACK_FLAG = "\U0001f3f4"
#: A flag's tags, which pass: a subdivision code (at most seven tags: ``gbsct``, ``usca``) and
#: the cancel tag that ends it. Longer runs of tags would carry invisible text ("ASCII
#: smuggling", read by whatever reads logs after the operator): escaped from the eighth on.
#: Decided by what precedes each tag only, so a text cut short never escapes more of what it
#: keeps (:func:`_fitting` relies on that).
_EMOJI_FLAG = re.compile("\U0001f3f4[\U000e0020-\U000e007e]{1,7}\U000e007f?")
_CONTINUATION = re.compile(r"\n(?=[^ \t\n])")
_EVERY_LINE = re.compile(r"\n(?=[^\n])")
#: The line Python prints between the tracebacks of a chain, at column 0.
_CHAINED = re.compile(
    r"\n(?:The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)
#: What a logger name may not hold, for an ASCII name: all but letters, digits and ``_-.:``.
_ASCII_NAME_JUNK = re.compile(r"[^A-Za-z0-9_\-.:]+")
#: Likewise for any name: ``\w`` is any script's letters and digits (and ``_``). Combining
#: marks are not in it, but a word of many scripts needs them (Devanagari's vowel signs and
#: virama, an accent written apart): :func:`_kept_marks` lets those that follow one pass.
_NAME_JUNK = re.compile(r"[^\w\-.:]+")
#: Where a text was cut, in :func:`cut_mark`'s words, when the process that emitted it cut it.
IN_EMITTING_PROCESS = " in the emitting process"


def cut_mark(count: int, unit: str = "characters", where: str = "") -> str:
    """The words that end a text cut ``count`` ``unit`` short, one formatting for every cut:
    ``... [truncated 1200 characters]``; ``where`` is :data:`IN_EMITTING_PROCESS` when the
    plugin's side cut it (a mark this module recognizes, and keeps, at the end of a text)."""
    return f"... [truncated {count} {unit}{where}]"


#: The mark a sender's isoplug puts where it cut a text (``cut_mark(n, where=
#: IN_EMITTING_PROCESS)``), recognized only at the very end of a text, its count bounded.
_SENDER_MARK = re.compile(
    r"\.\.\. \[truncated ([1-9][0-9]{0,14}) characters" + IN_EMITTING_PROCESS + r"\]\Z"
)
#: The longest sender mark there is: where to start looking for one.
_SENDER_MARK_CHARS = len(cut_mark(0, where=IN_EMITTING_PROCESS)) - 1 + 15


def _cut(text: str, keep: int) -> tuple[int, str]:
    """Where to cut ``text``, at ``keep`` characters at most, and the mark that says so (see
    the module docstring: a sender's own mark at its end is kept, or counted apart)."""
    sender = _SENDER_MARK.search(text, max(0, len(text) - _SENDER_MARK_CHARS))
    if sender is None:
        return keep, cut_mark(len(text) - keep)
    body = sender.start()
    if keep >= body:
        # Only the sender's mark is over the limit: it stays, whole.
        return body, sender.group()
    return keep, (
        f"... [truncated {body - keep} characters here and {sender.group(1)} in the emitting "
        "process]"
    )


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    keep, mark = _cut(text, limit)
    return text[:keep] + mark


def _translated(text: str) -> str:
    """``text`` with every character to escape escaped (tags within emoji flags kept)."""
    # A str of only BMP characters cannot hold the flag: the search then ends at once.
    if _BLACK_FLAG not in text:
        return text.translate(_ESCAPE_TABLE)
    parts: list[str] = []
    done = 0
    for flag in _EMOJI_FLAG.finditer(text):
        parts += (text[done : flag.start()].translate(_ESCAPE_TABLE), flag.group())
        done = flag.end()
    parts.append(text[done:].translate(_ESCAPE_TABLE))
    return "".join(parts)


def _escape(text: str, block: bool = False) -> str:
    text = _translated(text)
    if "\n" not in text:
        return text
    chained = _CHAINED.search(text) if block else None
    if chained is None:
        return _CONTINUATION.sub("\n  ", text)
    # A chained traceback: from the first chain line on, every line moves right by two, the
    # indented ones too, so that each later "Traceback" header stays left of its frames (at
    # the chain line's level), as Python prints them.
    head, tail = text[: chained.start()], text[chained.start() :]
    return _CONTINUATION.sub("\n  ", head) + _EVERY_LINE.sub("\n  ", tail)


def _fitting(text: str, low: int, high: int, limit: int, block: bool) -> int:
    """The most characters of ``text``, between ``low`` and ``high``, whose escaped form fits
    in ``limit``. Cutting characters off the end never lengthens the escaped rest, and each one
    cut shortens it by one at least: ``low``, ``high`` less the excess, always fits, and a
    binary search (a few C-speed translations) finds the most that do."""
    while low < high:
        middle = (low + high + 1) // 2
        if len(_escape(text[:middle], block)) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def clean_text(text: str, limit: int) -> str:
    """Escape control characters, indent continuation lines, cap the length.

    The result is at most ``limit`` characters, plus the mark of a cut, which counts the
    characters of ``text`` left out (not those of their escaped form).
    """
    return _clean(text, limit, block=False)


def _clean(text: str, limit: int, block: bool) -> str:
    if len(text) <= limit:
        if text.isprintable():
            # The common case, checked in C: nothing to escape, no newline.
            return text
        keep, mark = len(text), ""
    else:
        keep, mark = _cut(text, limit)
    head = text[:keep] if keep < len(text) else text
    if head.isprintable():
        return head + mark
    escaped = _escape(head, block)
    if len(escaped) > limit:
        # Escapes and indentation lengthened the text past the limit: keep fewer of its
        # characters.
        fitting = _fitting(text, max(0, keep - (len(escaped) - limit)), keep, limit, block)
        keep, mark = _cut(text, fitting)
        escaped = _escape(text[:keep], block)
    return escaped + mark


def clean_path(text: object, limit: int) -> str:
    """:func:`clean_text` for a path, or a line quoting paths: a name's bytes that are not
    UTF-8 (lone surrogates, as ``os.fsdecode`` gives them) are shown as ``\\udcXX`` too, and
    a tab or a line break in a name as ``\\t``, ``\\n``: a path is one line, whose break
    would otherwise be taken for the next line of the record (indented, not escaped)."""
    return clean_message(str(text).translate(_PATH_BREAKS), limit)


def clean_message(text: object, limit: int) -> str:
    """:func:`clean_text` for a message of several lines that quotes paths (each shown by
    :func:`clean_path` as it was put in): its line breaks are its own, kept; a name's bytes
    that are not UTF-8 are shown as ``\\udcXX``."""
    return clean_text(str(text).encode("utf-8", "backslashreplace").decode("utf-8"), limit)


#: The whitespace controls clean_text keeps (a message's own lines and tabs), escaped in a path.
_PATH_BREAKS = {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


#: First lines that a traceback or stack text legitimately starts with at column 0.
_BLOCK_HEADERS = ("Traceback (most recent call last):", "Stack (most recent call last):")


def clean_block(text: str, limit: int) -> str:
    """:func:`clean_text` for a block printed on lines of its own (a traceback, a stack).

    Formatters print such a block starting on a fresh line, so its first line is indented too,
    unless it is the header Python itself writes there. In a chained traceback, every line
    from the first chain line on is indented (see :func:`_escape`).
    """
    text = _clean(text, limit, block=True)
    if text[:1] not in (" ", "\t", "") and not text.startswith(_BLOCK_HEADERS):
        text = "  " + text
    return text


def clean_logger_name(name: str, limit: int) -> str:
    """A logger-name suffix that cannot escape its prefix or disturb the output: letters and
    digits of any script kept, so that distinct names stay distinct (see the module
    docstring)."""
    if len(name) > limit * 4:
        name = name[: limit * 4]
    if name.isascii():
        cleaned = _ASCII_NAME_JUNK.sub("_", name)
    else:
        cleaned = _NAME_JUNK.sub(_kept_marks, name)
    if ".." in cleaned or cleaned.startswith(".") or cleaned.endswith("."):
        cleaned = ".".join(part for part in cleaned.split(".") if part)
    if len(cleaned) > limit:
        cleaned = cleaned[:limit].rstrip(".")
    return cleaned


def _kept_marks(junk: re.Match[str]) -> str:
    """A run of what no name holds, as ``_``; but the combining marks at its start, when it
    follows a letter or digit, kept: a mark after ``.`` or ``:`` would draw over the
    separator, and one at a name's start over what the host writes before it."""
    run = junk.group()
    start = junk.start()
    if start == 0 or not junk.string[start - 1].isalnum():
        return "_"
    marks = 0
    while marks < len(run) and unicodedata.category(run[marks])[0] == "M":
        marks += 1
    if marks == len(run):
        return run
    return run[:marks] + "_"
