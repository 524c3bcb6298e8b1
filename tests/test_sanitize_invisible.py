"""Invisible characters in the sanitizer (isoplug.wire.invisible, isoplug.wire.sanitize):
every default ignorable code point and format character is escaped, but the few ordinary text
needs, each only where it needs it; none survives in a logger name."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.wire.invisible import DEFAULT_IGNORABLE, NOT_IGNORABLE_FORMAT
from isoplug.wire.sanitize import clean_logger_name, clean_text
from tests.wire_strategies import PROPERTY

LIMIT = 10_000

#: Every code point of the hard-coded table (Unicode's Default_Ignorable_Code_Point).
IGNORABLE = frozenset(
    chr(code) for first, last in DEFAULT_IGNORABLE for code in range(first, last + 1)
)
#: Every format character of this Python's Unicode database.
FORMAT = frozenset(
    chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf"
)
#: What never shows as it is, whatever its neighbours, but where ordinary text needs it.
INVISIBLE = IGNORABLE | FORMAT
#: The flag of Scotland: 🏴, the tags g b s c t, the cancel tag.
SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


def tags(text: str) -> str:
    """``text`` spelt in tag characters (invisible ASCII)."""
    return "".join(chr(0xE0000 + ord(char)) for char in text)


def flag(code: str) -> str:
    """The emoji tag sequence of the subdivision ``code`` (``gbsct``)."""
    return "\U0001f3f4" + tags(code) + "\U000e007f"


def hidden(data: bytes) -> str:
    """``data`` spelt in variation selectors, one per byte (the "variation selector smuggling"
    of hidden instructions)."""
    return "".join(chr(0xFE00 + b) if b < 16 else chr(0xE0100 + b - 16) for b in data)


def test_the_table_holds_every_format_character_but_those_unicode_means_to_be_seen() -> None:
    """Default_Ignorable_Code_Point is derived from Cf, less the prepended concatenation
    marks, interlinear annotations and Egyptian format controls (NOT_IGNORABLE_FORMAT), plus
    the variation selectors: a Python whose Unicode adds one tells here."""
    seen = frozenset(
        chr(code) for first, last in NOT_IGNORABLE_FORMAT for code in range(first, last + 1)
    )
    assert FORMAT - IGNORABLE - seen == set()
    assert not IGNORABLE & seen
    selectors = {
        chr(code)
        for code in range(sys.maxunicode + 1)
        if "VARIATION SELECTOR" in unicodedata.name(chr(code), "")
    }
    assert selectors and selectors <= IGNORABLE
    for char in IGNORABLE:
        # Reserved (Cn), or of the categories the table's comments give: nothing visible.
        assert unicodedata.category(char) in ("Cn", "Cf", "Mn", "Lo"), hex(ord(char))


def test_every_invisible_character_out_of_place_is_escaped() -> None:
    """Alone, or splitting an ASCII word (``pass?word``, which a search for ``password`` would
    miss), every default ignorable and format character is an escape; the soft hyphen alone
    may split a word, as it does in German."""
    for char in sorted(INVISIBLE):
        assert clean_text(char, 100).startswith("\\"), hex(ord(char))
        if char != "\u00ad":
            assert clean_text(f"pass{char}word", 100) == "pass" + ascii(char)[1:-1] + "word"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("pass\u034fword", "pass\\u034fword", id="combining-grapheme-joiner"),
        pytest.param("pass\u3164word", "pass\\u3164word", id="hangul-filler"),
        pytest.param("\u115f\u1160\uffa0", "\\u115f\\u1160\\uffa0", id="hangul-fillers"),
        pytest.param("\u1780\u17b4", "\u1780\\u17b4", id="khmer-inherent-vowel"),
        pytest.param("a\u180b", "a\\u180b", id="mongolian-selector-after-latin"),
        pytest.param("pass\ufe0fword", "pass\\ufe0fword", id="emoji-selector-after-a-letter"),
        pytest.param("\u845b\U000e0100\U000e0101", "\u845b\U000e0100\\U000e0101", id="two-vs"),
        pytest.param("\u2764\ufe0f\ufe0f", "\u2764\ufe0f\\ufe0f", id="two-emoji-selectors"),
        pytest.param("a\U000e0100", "a\\U000e0100", id="ideographic-selector-after-latin"),
        pytest.param(
            "ok" + hidden(b"rm"), "ok\\U000e0162\\U000e015d", id="variation-selector-payload"
        ),
        pytest.param("a\u200d\u200db", "a\\u200d\\u200db", id="joiner-run"),
        pytest.param("\u0645\u200c\u200c\u062e", "\u0645\\u200c\\u200c\u062e", id="zwnj-run"),
        pytest.param("\u0645\u200c", "\u0645\\u200c", id="zwnj-at-the-end"),
        pytest.param("\U0001f468\u200d ", "\U0001f468\\u200d ", id="joiner-before-a-space"),
        pytest.param("a\u00ad\u00adb", "a\\xad\\xadb", id="soft-hyphen-run"),
        pytest.param("\u00adb", "\\xadb", id="soft-hyphen-first"),
    ],
)
def test_invisible_characters_pass_only_where_text_needs_them(text: str, shown: str) -> None:
    """Out of the one place text needs them (after a base that has variants, between letters
    or emoji), alone or in runs, they are escapes."""
    assert clean_text(text, LIMIT) == shown


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="persian-zwnj"),
        pytest.param("\u0915\u094d\u200d\u0937", id="hindi-conjunct-zwj"),
        pytest.param("\u0915\u094d\u200c\u0937", id="hindi-explicit-virama-zwnj"),
        pytest.param("\U0001f468\u200d\U0001f469\u200d\U0001f467", id="emoji-family-zwj"),
        pytest.param("\U0001f3f3\ufe0f\u200d\U0001f308", id="rainbow-flag-vs16-zwj"),
        pytest.param("\U0001f9d1\U0001f3fd\u200d\U0001f4bb", id="skin-tone-zwj"),
        pytest.param("\U0001f3f4\u200d\u2620\ufe0f", id="pirate-flag"),
        pytest.param("1\ufe0f\u20e3 #\ufe0f\u20e3", id="keycaps"),
        pytest.param("\u00a9\ufe0f \u203c\ufe0f \u2764\ufe0e", id="emoji-and-text-selectors"),
        pytest.param(SCOTLAND + " " + flag("gbeng") + flag("usca"), id="subdivision-flags"),
        pytest.param("\u845b\U000e0100\u8fbb\U000e0101", id="ideographic-variants"),
        pytest.param("\u1824\u180b\u1822\u180c", id="mongolian-variants"),
        pytest.param("Donau\u00addampf\u00adschiff", id="soft-hyphen"),
    ],
)
def test_ordinary_text_of_any_language_passes_unchanged(text: str) -> None:
    """The invisible characters words and emoji are spelt with (ZWNJ, ZWJ, variation
    selectors, a flag's tags, the soft hyphen) pass, alone, in a line and beside a newline."""
    assert clean_text(text, LIMIT) == text
    assert clean_text(f"x {text}\n{text}", LIMIT) == f"x {text}\n  {text}"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("a\U000e0067\U000e007f", "a\\U000e0067\\U000e007f", id="no-flag"),
        pytest.param(
            "\U0001f3f4" + tags("ignore ") + "\U000e007f",
            "\U0001f3f4\\U000e0069\\U000e0067\\U000e006e\\U000e006f\\U000e0072\\U000e0065"
            "\\U000e0020\\U000e007f",
            id="spaces-and-seven-tags",
        ),
        pytest.param(
            "\U0001f3f4" + tags("GBSCT") + "\U000e007f",
            "\U0001f3f4\\U000e0047\\U000e0042\\U000e0053\\U000e0043\\U000e0054\\U000e007f",
            id="uppercase",
        ),
        pytest.param(
            "\U0001f3f4" + tags("gbsct"), "\U0001f3f4" + ascii(tags("gbsct"))[1:-1], id="no-end"
        ),
        pytest.param(
            "\U0001f3f4" + tags("gb") + "\U000e007f",
            "\U0001f3f4\\U000e0067\\U000e0062\\U000e007f",
            id="no-subdivision",
        ),
        pytest.param(SCOTLAND + "\U000e0067", SCOTLAND + "\\U000e0067", id="after-the-cancel"),
        pytest.param("\U0001f3f4\U000e0001", "\U0001f3f4\\U000e0001", id="language-tag"),
    ],
)
def test_tags_outside_a_valid_emoji_flag_are_escaped(text: str, shown: str) -> None:
    """Tags spell invisible ASCII: only a subdivision code (UTS #51's valid emoji tag
    sequence: lowercase region and subdivision, then the cancel tag) passes."""
    assert clean_text(text, LIMIT) == shown


def test_a_cut_keeps_what_the_whole_text_lets_pass() -> None:
    """What passes is decided on the text received: a cut inside a flag, or right after a
    joiner between letters, keeps those unescaped, within the limit."""
    assert clean_text(SCOTLAND * 3, 10) == SCOTLAND + SCOTLAND[:3] + "... [truncated 11 characters]"
    persian = "\u0645\u06cc\u200c\u062e"
    assert clean_text(persian, 3) == persian[:3] + "... [truncated 1 characters]"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("db\u034f", "db_", id="grapheme-joiner"),
        pytest.param("evil.\u3164", "evil._", id="hangul-filler-component"),
        pytest.param("\u115fdb\uffa0", "_db_", id="hangul-fillers"),
        pytest.param("db" + hidden(b"ignore all previous instructions"), "db_", id="vs-payload"),
        pytest.param("db\ufe0f.x\U000e0100", "db_.x_", id="variation-selectors"),
        pytest.param("\u1780\u17b4", "\u1780_", id="khmer-inherent-vowel"),
        pytest.param("cafe\u0301\u034f", "cafe\u0301_", id="visible-mark-then-joiner"),
    ],
)
def test_invisible_characters_never_survive_in_a_logger_name(name: str, expected: str) -> None:
    """``plugin.evil.db`` and ``plugin.evil.db<CGJ>`` would be two loggers that look alike;
    a component of one Hangul filler looks empty: invisible characters become ``_``."""
    assert clean_logger_name(name, 200) == expected


#: Characters that exercise every rule: each invisible character that passes somewhere, some
#: that never do, and the neighbours that decide (letters of ASCII and beyond, marks, emoji,
#: skin tones, keycap digits, ideographs, Mongolian letters, a black flag and lowercase tags).
invisible_texts = st.text(
    alphabet=st.sampled_from(
        [
            *"\u00ad\u200c\u200d\u034f\u3164\u115f\u17b4\u180b\u180f\ufe00\ufe0e\ufe0f\u200b",
            *"\U000e0100\U000e01ef\U000e007f\U000e0020\U000e0041",
            *(chr(0xE0061 + n) for n in range(4)),
            *"\U000e0030\U0001f3f4\U0001f468\U0001f3fd\u2764\u00a9",
            *"ab1# \n.\u00e9\u0645\u0915\u094d\u0301\u845b\u1824",
        ]
    ),
    max_size=40,
)
#: Any of them in a place where no rule lets it pass.
ASCII_WORD_SPLIT = re.compile(f"[A-Za-z][{''.join(sorted(INVISIBLE - {chr(0xAD)}))}]+[A-Za-z]")


def visible_lines(cleaned: str) -> str:
    """``cleaned`` without the indentation the sanitizer adds after a line break."""
    return re.sub(r"\n +", "\n", cleaned)


@PROPERTY
@given(text=invisible_texts)
def test_invisible_characters_never_pile_up_nor_split_an_ascii_word(text: str) -> None:
    """Whatever the text, an invisible character that survives stands alone (but a flag's
    tags, and an emoji's selector before its joiner), never first, never between ASCII
    letters but the soft hyphen: no run carries hidden data, no word of ASCII letters differs
    from the one it looks like but by a soft hyphen."""
    cleaned = clean_text(text, LIMIT)
    kept = [(at, char) for at, char in enumerate(cleaned) if char in INVISIBLE]
    flag_tags = {
        at
        for match in re.finditer("\U0001f3f4[\U000e0020-\U000e007f]+", cleaned)
        for at in range(match.start() + 1, match.end())
    }
    for at, char in kept:
        assert at > 0, (text, cleaned)
        if at in flag_tags:
            continue
        before = cleaned[at - 1]
        assert before not in INVISIBLE or (before in "\ufe0e\ufe0f" and char == "\u200d"), (
            text,
            cleaned,
        )
    assert not ASCII_WORD_SPLIT.search(cleaned), (text, cleaned)
    for match in re.finditer("\U0001f3f4([\U000e0020-\U000e007f]+)", cleaned):
        code = "".join(chr(ord(tag) - 0xE0000) for tag in match.group(1))
        assert re.fullmatch("([a-z]{2}[a-z0-9]{1,4}|[0-9]{3})\x7f", code), (text, cleaned)


@PROPERTY
@given(text=invisible_texts, limit=st.integers(0, 40))
def test_a_cut_text_never_escapes_more(text: str, limit: int) -> None:
    """A text cut to any limit shows, before its mark, the start of what the whole text shows
    (the same characters escaped), within the limit."""
    whole = visible_lines(clean_text(text, LIMIT))
    cut = clean_text(text, limit)
    body = re.sub(r"\.\.\. \[truncated \d+ characters\]\Z", "", cut)
    assert len(body) <= limit, (text, cut)
    assert whole.startswith(visible_lines(body)), (text, cut, whole)


@PROPERTY
@given(name=invisible_texts, limit=st.integers(1, 30))
def test_no_invisible_character_survives_in_a_logger_name(name: str, limit: int) -> None:
    """Whatever the name, its cleaned form holds no invisible character."""
    assert not INVISIBLE & set(clean_logger_name(name, limit))
