"""Making text from outside this process safe to put into its logs and exception messages.

The one sanitizer: text from a runner, a plugin or a peer that has not authenticated goes
through these functions before it reaches any record or error message. It lives in the wire
layer (pure functions, no I/O) so that every layer above can use it.

Three threats, three rules:

- **Terminal escapes, control and invisible characters** (``ESC[2J``, backspace, bidi
  overrides, zero-width spaces, variation selectors) could rewrite, reorder or hide what an
  operator sees, or make a word differ from one that looks the same: every C0/C1 control
  character except tab and newline, DEL, the Unicode line/paragraph separators, every format
  character (category Cf) and every default ignorable code point (what renderers draw as
  nothing: the combining grapheme joiner, Hangul fillers, variation selectors, tags...) are
  shown as ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN`` escapes, but for the few that ordinary
  text needs, each only where it needs it (:mod:`isoplug.wire.invisible` says which and
  where; docs/security.md why).
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
that follow one, and ``_-.:`` survive (each run of anything else, invisible characters all
among it, becomes one ``_``), empty components are removed, and the length is capped.
"""

from __future__ import annotations

import re
import unicodedata

from isoplug.wire.invisible import INVISIBLE_LETTERS, escaped, is_invisible, shows_as_is

__all__ = [
    "IN_EMITTING_PROCESS",
    "cap_text",
    "clean_block",
    "clean_logger_name",
    "clean_message",
    "clean_path",
    "clean_quoted",
    "clean_text",
    "cut_mark",
    "shows_as_is",
]

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
#: The Hangul fillers are letters to ``\w``, yet show as nothing: junk.
_NAME_JUNK = re.compile(r"(?:[^\w\-.:]|" + INVISIBLE_LETTERS.pattern + ")+")
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


def _escape(text: str, block: bool = False, end: int | None = None) -> str:
    """``text[:end]`` escaped and indented (which invisible characters pass is decided on the
    whole of ``text``: see :func:`isoplug.wire.invisible.escaped`)."""
    text = escaped(text, len(text) if end is None else end)
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
        if len(_escape(text, block, middle)) <= limit:
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


#: What :func:`clean_quoted` escapes itself, before the sanitizer: the escape character, so
#: that the sanitizer's own escapes cannot be told from text typed to look like them, the
#: quote, and the line breaks, which in a quoted name end nothing.
_QUOTED_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t"})


def clean_quoted(text: str, limit: int) -> str:
    """``text`` (a name a peer claims, say) in single quotes, escaped once: a real U+202E
    shows as ``'\\u202e'``, the six characters ``\\u202e`` typed as ``'\\\\u202e'`` (``repr``
    after :func:`clean_text` showed both alike, doubled)."""
    return f"'{clean_text(text.translate(_QUOTED_ESCAPES), limit)}'"


def _clean(text: str, limit: int, block: bool) -> str:
    if len(text) <= limit:
        if (text.isascii() and text.isprintable()) or shows_as_is(text):
            # The common case, checked in C (ASCII without a call): nothing to escape, no
            # newline.
            return text
        keep, mark = len(text), ""
    else:
        keep, mark = _cut(text, limit)
    head = text[:keep] if keep < len(text) else text
    if shows_as_is(head):
        return head + mark
    # What passes is decided on the whole text, so that a cut never escapes more of it.
    shown = _escape(text, block, keep)
    if len(shown) > limit:
        # Escapes and indentation lengthened the text past the limit: keep fewer of its
        # characters.
        fitting = _fitting(text, max(0, keep - (len(shown) - limit)), keep, limit, block)
        keep, mark = _cut(text, fitting)
        shown = _escape(text, block, keep)
    return shown + mark


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
    separator, and one at a name's start over what the host writes before it. Invisible
    marks (variation selectors, the grapheme joiner) are junk: ``db`` and ``db\u034f`` are
    two loggers that would look the same."""
    run = junk.group()
    start = junk.start()
    if start == 0 or not junk.string[start - 1].isalnum():
        return "_"
    marks = 0
    while (
        marks < len(run)
        and unicodedata.category(run[marks])[0] == "M"
        and not is_invisible(run[marks])
    ):
        marks += 1
    if marks == len(run):
        return run
    return run[:marks] + "_"
