"""Making text from outside this process safe to put into its logs and exception messages.

The one sanitizer: text from a runner, a plugin or a peer that has not authenticated goes
through these functions before it reaches any record or error message. It lives in the wire
layer (pure functions, no I/O) so that every layer above can use it.

Three threats, three rules:

- **Terminal escapes and control characters** (``ESC[2J``, backspace, bidi overrides) could
  rewrite or hide what an operator sees: every C0/C1 control character except tab and newline,
  DEL, and the Unicode line/paragraph separators and bidi controls are shown as ``\\xNN`` /
  ``\\uNNNN`` escapes.
- **Forged log lines**: a message containing ``"\\n2026-01-01 INFO app.db: ..."`` would look
  like a separate record of another logger. Every continuation line that does not already start
  with white space is indented by two spaces, so no line from a plugin can start at column 0 —
  where every record of every usual format starts. (Indented traceback lines are untouched.)
- **Size**: texts are capped; a cut is marked with how much was cut.

Logger names get a stricter treatment: only letters, digits and ``_-.:`` survive, empty
components are removed, and the length is capped.
"""

from __future__ import annotations

import re

__all__ = ["cap_text", "clean_block", "clean_logger_name", "clean_text"]

_ESCAPED = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
# Line/paragraph separators, bidi controls (Trojan Source), zero-width and invisible characters.
_ESCAPED += [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F]
_ESCAPED += [0x061C, 0x00AD, *range(0x200B, 0x200E), *range(0x2060, 0x2065), 0xFEFF]
_ESCAPE_TABLE = {
    code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _ESCAPED
}
_CONTINUATION = re.compile(r"\n(?=[^ \t\n])")
_NAME_JUNK = re.compile(r"[^A-Za-z0-9_\-.:]+")


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated {len(text) - limit} characters]"


def clean_text(text: str, limit: int) -> str:
    """Escape control characters, indent continuation lines, cap the length."""
    if len(text) > limit:
        text = cap_text(text, limit)
    if text.isprintable():
        # The common case, checked in C: nothing to escape, no newline.
        return text
    text = text.translate(_ESCAPE_TABLE)
    if "\n" in text:
        text = _CONTINUATION.sub("\n  ", text)
    # Escapes and indentation lengthen the text; the cap holds for the result too.
    return cap_text(text, limit) if len(text) > limit else text


#: First lines that a traceback or stack text legitimately starts with at column 0.
_BLOCK_HEADERS = ("Traceback (most recent call last):", "Stack (most recent call last):")


def clean_block(text: str, limit: int) -> str:
    """:func:`clean_text` for a block printed on lines of its own (a traceback, a stack).

    Formatters print such a block starting on a fresh line, so its first line is indented too,
    unless it is the header Python itself writes there.
    """
    text = clean_text(text, limit)
    if text[:1] not in (" ", "\t", "") and not text.startswith(_BLOCK_HEADERS):
        text = "  " + text
    return text


def clean_logger_name(name: str, limit: int) -> str:
    """A logger-name suffix that cannot escape its prefix or disturb the output."""
    if len(name) > limit * 4:
        name = name[: limit * 4]
    cleaned = _NAME_JUNK.sub("_", name)
    if ".." in cleaned or cleaned.startswith(".") or cleaned.endswith("."):
        cleaned = ".".join(part for part in cleaned.split(".") if part)
    if len(cleaned) > limit:
        cleaned = cleaned[:limit].rstrip(".")
    return cleaned
