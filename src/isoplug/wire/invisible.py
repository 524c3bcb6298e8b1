"""Which characters of a text from outside are escaped, and the invisible ones that pass where
ordinary text needs them (:mod:`isoplug.wire.sanitize` applies it; docs/security.md, "Invisible
characters: what passes, and why", says why).

Escaped: C0/C1 controls but tab and newline, DEL, the line and paragraph separators, lone
surrogates, every format character (Cf) and every *default ignorable* code point: what
renderers draw as nothing (combining grapheme joiner, Hangul fillers, variation selectors...),
so able to make a word differ from one that looks the same or to carry hidden text.

A few default ignorables pass, each only in the one place text needs it, so that none can
stand in a run (hidden data) or split a word of ASCII letters (a search for ``password``):

- the soft hyphen between two letters;
- the zero-width non-joiner between two letters, and the joiner between two letters or two
  emoji, never both letters ASCII;
- one variation selector right after a character with variants (an emoji or symbol, a keycap
  digit, a CJK ideograph), or one Mongolian free variation selector after a Mongolian letter;
- tag characters within a valid emoji tag sequence (a subdivision flag).

Each is decided by the characters around it in the text as received, before any cut: a cut
text never escapes more of what it keeps (``sanitize._fitting`` relies on it).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "DEFAULT_IGNORABLE",
    "INVISIBLE_LETTERS",
    "NOT_IGNORABLE_FORMAT",
    "escaped",
    "is_invisible",
    "shows_as_is",
]

#: Default_Ignorable_Code_Point, from DerivedCoreProperties.txt of Unicode 14.0 (the version
#: of Python 3.11's unicodedata; https://www.unicode.org/Public/14.0.0/ucd/), which Python
#: cannot tell. tests/test_sanitize_invisible.py checks it against this Python's database by
#: the property's derivation (every format character but NOT_IGNORABLE_FORMAT, every
#: variation selector).
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),  # Cf SOFT HYPHEN
    (0x034F, 0x034F),  # Mn COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # Cf ARABIC LETTER MARK
    (0x115F, 0x1160),  # Lo HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # Mn KHMER VOWEL INHERENT AQ..KHMER VOWEL INHERENT AA
    (0x180B, 0x180D),  # Mn MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180E, 0x180E),  # Cf MONGOLIAN VOWEL SEPARATOR
    (0x180F, 0x180F),  # Mn MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x200B, 0x200F),  # Cf ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # Cf LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),  # Cf WORD JOINER..INVISIBLE PLUS
    (0x2065, 0x2065),  # Cn <reserved-2065>
    (0x2066, 0x206F),  # Cf LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0x3164, 0x3164),  # Lo HANGUL FILLER
    (0xFE00, 0xFE0F),  # Mn VARIATION SELECTOR-1..VARIATION SELECTOR-16
    (0xFEFF, 0xFEFF),  # Cf ZERO WIDTH NO-BREAK SPACE
    (0xFFA0, 0xFFA0),  # Lo HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # Cn <reserved-FFF0>..<reserved-FFF8>
    (0x1BCA0, 0x1BCA3),  # Cf SHORTHAND FORMAT LETTER OVERLAP..SHORTHAND FORMAT UP STEP
    (0x1D173, 0x1D17A),  # Cf MUSICAL SYMBOL BEGIN BEAM..MUSICAL SYMBOL END PHRASE
    (0xE0000, 0xE0000),  # Cn <reserved-E0000>
    (0xE0001, 0xE0001),  # Cf LANGUAGE TAG
    (0xE0002, 0xE001F),  # Cn <reserved-E0002>..<reserved-E001F>
    (0xE0020, 0xE007F),  # Cf TAG SPACE..CANCEL TAG
    (0xE0080, 0xE00FF),  # Cn <reserved-E0080>..<reserved-E00FF>
    (0xE0100, 0xE01EF),  # Mn VARIATION SELECTOR-17..VARIATION SELECTOR-256
    (0xE01F0, 0xE0FFF),  # Cn <reserved-E01F0>..<reserved-E0FFF>
)
#: The format characters (Cf) Unicode leaves out of Default_Ignorable_Code_Point, as meant to
#: be seen (Unicode 16): the prepended concatenation marks (Arabic number signs, Syriac
#: abbreviation mark, Kaithi number signs...), the interlinear annotation characters and the
#: Egyptian hieroglyph format controls. Escaped all the same: fonts draw them, or not, and
#: none is a letter of ordinary text.
NOT_IGNORABLE_FORMAT = (
    (0x0600, 0x0605),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
)
_INVISIBLE = frozenset(
    chr(code)
    for first, last in (*DEFAULT_IGNORABLE, *NOT_IGNORABLE_FORMAT)
    for code in range(first, last + 1)
)
_ESCAPED = frozenset(
    (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
) | {ord(char) for char in _INVISIBLE}
# Lone surrogates (a file name that is not UTF-8, decoded with surrogateescape): no encoder of
# a UTF-8 log handler can write them, so one would make the handler fail on the record.
_ESCAPED |= frozenset(range(0xD800, 0xE000))
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


def _character_class(chars: frozenset[str]) -> re.Pattern[str]:
    """A regular expression matching any of ``chars``, written as ranges: a class of
    thousands of single characters would make every search of a non-ASCII text slow."""
    ranges: list[list[int]] = []
    for code in sorted(map(ord, chars)):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile(
        "["
        + "".join(
            re.escape(chr(first)) + ("" if first == last else "-" + re.escape(chr(last)))
            for first, last in ranges
        )
        + "]"
    )


#: The invisible characters str.isprintable() lets through (marks and Hangul fillers): the
#: only ones a printable text may hide.
_PRINTABLE_INVISIBLE = _character_class(frozenset(c for c in _INVISIBLE if c.isprintable()))
#: The invisible characters that are letters to str.isalnum() and regular expressions' ``\w``
#: (the Hangul fillers).
INVISIBLE_LETTERS = _character_class(frozenset(c for c in _INVISIBLE if c.isalnum()))
#: The invisible characters that pass somewhere (the module docstring says where).
_PASS_IN_CONTEXT = re.compile(
    "[\u00ad\u180b-\u180d\u180f\u200c\u200d\ufe00-\ufe0f\U000e0020-\U000e007f\U000e0100-\U000e01ef]"
)
#: A valid emoji tag sequence (UTS #51, "Valid Emoji Tag Sequences"): the black flag, a tag
#: spec that reads (each tag less 0xE0000) as a CLDR subdivision id (a two-letter region and
#: one to four letters or digits, lowercase: ``gbsct``, ``usca``) or a three-digit region,
#: and the cancel tag. Any other run of tags would spell hidden ASCII.
_EMOJI_FLAG = re.compile(
    "\U0001f3f4"
    "(?:[\U000e0061-\U000e007a]{2}[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,4}"
    "|[\U000e0030-\U000e0039]{3})"
    "\U000e007f"
)
#: The longest flag: where a flag that starts before a cut may end.
_LONGEST_FLAG = 1 + 6 + 1
_BLACK_FLAG = "\U0001f3f4"
_ZWNJ, _ZWJ, _SOFT_HYPHEN = "\u200c", "\u200d", "\u00ad"
_JOINERS = frozenset((_ZWNJ, _ZWJ, _SOFT_HYPHEN))
_EMOJI_SELECTORS = frozenset("\ufe0e\ufe0f")
_KEYCAP_BASES = frozenset("#*0123456789")


def is_invisible(char: str) -> bool:
    """Whether ``char`` is a default ignorable or another format character."""
    return char in _INVISIBLE


def shows_as_is(text: str) -> bool:
    """Whether ``text`` needs no escape: printable (no control, no format character) and none
    of the invisible marks and fillers that str.isprintable() accepts. Cheap for ASCII."""
    return text.isprintable() and (text.isascii() or _PRINTABLE_INVISIBLE.search(text) is None)


def escaped(text: str, end: int) -> str:
    """``text[:end]`` with every character to escape escaped, but the invisible characters
    that pass where they stand in the whole of ``text`` (the module docstring)."""
    head = text if end >= len(text) else text[:end]
    if head.isascii():
        return head.translate(_ESCAPE_TABLE)
    first = _PASS_IN_CONTEXT.search(head)
    if first is None:
        return head.translate(_ESCAPE_TABLE)
    flag_tags = _flag_tags(text, end) if _BLACK_FLAG in head else frozenset()
    parts: list[str] = []
    done = 0
    kept_before = -1
    for candidate in _PASS_IN_CONTEXT.finditer(head, first.start()):
        at = candidate.start()
        if _passes(text, at, kept_before == at - 1, flag_tags):
            parts += (head[done:at].translate(_ESCAPE_TABLE), candidate.group())
            done = at + 1
            kept_before = at
    parts.append(head[done:].translate(_ESCAPE_TABLE))
    return "".join(parts)


def _flag_tags(text: str, end: int) -> frozenset[int]:
    """Where the tags of valid emoji flags lie, for flags that start before ``end``."""
    return frozenset(
        at
        for flag in _EMOJI_FLAG.finditer(text, 0, min(len(text), end + _LONGEST_FLAG))
        for at in range(flag.start() + 1, flag.end())
    )


def _passes(text: str, at: int, after_kept: bool, flag_tags: frozenset[int]) -> bool:
    """Whether the invisible character at ``at`` stands where text needs it; ``after_kept``:
    the character before it is an invisible one that passed (an emoji's variation selector)."""
    char = text[at]
    code = ord(char)
    if 0xE0020 <= code <= 0xE007F:
        return at in flag_tags
    before = text[at - 1] if at else ""
    if not before or (is_invisible(before) and not after_kept):
        return False
    if char in _JOINERS:
        after = text[at + 1 : at + 2]
        if _ends_letter(before) and after.isalpha():
            return char == _SOFT_HYPHEN or not (before.isascii() and after.isascii())
        return char == _ZWJ and _ends_emoji(before, after_kept) and _is_emoji(after)
    if after_kept:
        # Never two selectors in a row.
        return False
    if code >= 0xE0100:
        return _is_ideograph(before)
    if code >= 0xFE00:
        return _has_variants(before)
    # A Mongolian free variation selector.
    return 0x1820 <= ord(before) <= 0x18AA and before.isalpha()


def _ends_letter(char: str) -> bool:
    """A letter, or a combining mark (a virama, a vowel sign) that ends one."""
    return char.isalpha() or (unicodedata.category(char)[0] == "M" and not is_invisible(char))


def _ends_emoji(char: str, after_kept: bool) -> bool:
    """An emoji, or the variation selector that asked for one, or a skin-tone modifier."""
    return (after_kept and char in _EMOJI_SELECTORS) or _is_emoji(char)


def _is_emoji(char: str) -> bool:
    return bool(char) and not char.isascii() and unicodedata.category(char)[0] == "S"


def _has_variants(char: str) -> bool:
    """A character that standardized or emoji variation sequences start with: a symbol, a
    punctuation mark or a number beyond ASCII (©, ‼, ❤, ↔...), a keycap's base, an
    ideograph."""
    if char.isascii():
        return char in _KEYCAP_BASES
    return unicodedata.category(char)[0] in "SPN" or _is_ideograph(char)


def _is_ideograph(char: str) -> bool:
    """A CJK unified or compatibility ideograph (whose variants the ideographic variation
    selectors choose)."""
    code = ord(char)
    return (
        0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3FFFF
    )
