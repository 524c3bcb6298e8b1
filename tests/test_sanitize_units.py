"""The sanitizer (isoplug.wire.sanitize): escapes, indentation, caps, logger names; the
characters of ordinary text of any language that pass, and those that never do."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.wire.sanitize import cap_text, clean_logger_name, clean_text
from tests.wire_strategies import PROPERTY

LIMIT = 10_000

#: Characters clean_text must never let through: C0 controls except tab and newline, DEL, C1
#: controls, the Unicode line and paragraph separators (invisible characters have their own
#: tests: test_sanitize_invisible.py).
CONTROLS = frozenset(
    chr(code)
    for code in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
)

#: Text with plenty of line breaks, white space, characters that must be escaped and
#: invisible characters.
hostile_texts = st.text(
    alphabet=st.sampled_from(
        sorted(CONTROLS | {"\n", "\t", " ", "a", "\u00e9", "\u200d", "\u034f", "\U0001f3f4"})
    )
    | st.characters(),
    max_size=60,
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("\x1b[2J", "\\x1b[2J", id="esc"),
        pytest.param("\r", "\\x0d", id="carriage-return"),
        pytest.param("\x00", "\\x00", id="nul"),
        pytest.param("\x08", "\\x08", id="backspace"),
        pytest.param("\x7f", "\\x7f", id="del"),
        pytest.param("\x85", "\\x85", id="c1-next-line"),
        pytest.param("\x9b", "\\x9b", id="c1-csi"),
        pytest.param("\u2028", "\\u2028", id="line-separator"),
        pytest.param("\u2029", "\\u2029", id="paragraph-separator"),
        pytest.param("\u202e", "\\u202e", id="right-to-left-override"),
        pytest.param("\u2066", "\\u2066", id="left-to-right-isolate"),
        pytest.param("\u200f", "\\u200f", id="right-to-left-mark"),
        pytest.param("\u061c", "\\u061c", id="arabic-letter-mark"),
        pytest.param("\u180e", "\\u180e", id="mongolian-vowel-separator"),
        pytest.param("\u200b", "\\u200b", id="zero-width-space"),
        pytest.param("\u2060", "\\u2060", id="word-joiner"),
        pytest.param("\u2064", "\\u2064", id="invisible-plus"),
        pytest.param("\u206a", "\\u206a", id="inhibit-symmetric-swapping"),
        pytest.param("\ufeff", "\\ufeff", id="byte-order-mark"),
        pytest.param("\ufff9", "\\ufff9", id="interlinear-annotation-anchor"),
        pytest.param("\ufffb", "\\ufffb", id="interlinear-annotation-terminator"),
        pytest.param("\U000e0041", "\\U000e0041", id="tag-latin-capital-a"),
    ],
)
def test_clean_text_shows_control_characters_as_visible_escapes(raw: str, shown: str) -> None:
    """Terminal escapes, controls, separators and bidi controls become visible escapes."""
    assert clean_text(f"before{raw}after", LIMIT) == f"before{shown}after"


def test_bidi_controls_still_show_beside_the_joiners_that_pass() -> None:
    """A text mixing joiners that pass with a bidi override, an isolate, marks and a zero-width
    space: only the latter are escaped."""
    text = "\u0645\u06cc\u200c\u0627 \u202eevil\u2067x\u2069 \u200f!\u200e\u200ba\u2060b\ufeff"
    assert clean_text(text, LIMIT) == (
        "\u0645\u06cc\u200c\u0627 \\u202eevil\\u2067x\\u2069 \\u200f!\\u200e\\u200ba\\u2060b\\ufeff"
    )


def test_clean_text_escapes_lone_surrogates_so_a_utf8_handler_can_write_them() -> None:
    """A folder name that is not UTF-8 arrives with surrogate escapes: shown as escapes."""
    name = b"plug\xff\xfein".decode("utf-8", "surrogateescape")
    cleaned = clean_text(name, LIMIT)
    assert cleaned == "plug\\udcff\\udcfein"
    cleaned.encode("utf-8")  # raises on a lone surrogate


def test_clean_text_keeps_tabs_and_printable_text() -> None:
    """Tabs and ordinary (also non-ASCII) text pass unchanged."""
    assert clean_text("a\tb \u00e9\u4e2d", LIMIT) == "a\tb \u00e9\u4e2d"


def test_clean_text_indents_continuation_lines_that_start_at_column_zero() -> None:
    """A line break followed by a forged record line gets that line indented by two spaces."""
    forged = "fine\n2026-01-01 INFO app.db: transfer approved\nmore"
    assert clean_text(forged, LIMIT) == (
        "fine\n  2026-01-01 INFO app.db: transfer approved\n  more"
    )


def test_clean_text_leaves_indented_traceback_lines_alone() -> None:
    """Lines that already start with white space, like a traceback's, are not touched."""
    traceback_lines = 'boom\n  File "a.py", line 1, in <module>\n    1 / 0\n\tx'
    assert clean_text(traceback_lines, LIMIT) == traceback_lines


def test_clean_text_caps_the_length_with_a_marker() -> None:
    """Text over the limit is cut to it, with a marker saying how much was cut."""
    assert clean_text("x" * 25, 10) == "x" * 10 + "... [truncated 15 characters]"
    assert clean_text("x" * 10, 10) == "x" * 10


def test_the_mark_counts_characters_of_the_text_not_of_its_escapes() -> None:
    """A text whose escapes take it over the limit keeps as many of its characters as fit,
    escaped; the mark counts the characters of the text left out."""
    assert clean_text("a\x1b" * 20, 10) == "a\\x1ba\\x1b... [truncated 36 characters]"
    assert clean_text("\x1b" * 4, 10) == "\\x1b\\x1b... [truncated 2 characters]"


SENDER_MARK = "... [truncated {} characters in the emitting process]"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param(
            "x" * 30 + SENDER_MARK.format(970),
            10,
            "x" * 10 + "... [truncated 20 characters here and 970 in the emitting process]",
            id="both-cut",
        ),
        pytest.param(
            "x" * 10 + SENDER_MARK.format(970),
            12,
            "x" * 10 + SENDER_MARK.format(970),
            id="only-the-sender-cut",
        ),
        pytest.param(
            "\x1b" * 5 + SENDER_MARK.format(970),
            12,
            "\\x1b" * 3 + "... [truncated 2 characters here and 970 in the emitting process]",
            id="escapes-over-the-limit",
        ),
        pytest.param(
            "x" * 30 + SENDER_MARK.format("9" * 16),
            10,
            "x" * 10 + f"... [truncated {20 + len(SENDER_MARK.format('9' * 16))} characters]",
            id="no-such-count",
        ),
        pytest.param(
            "x" * 30 + SENDER_MARK.format("0012"),
            10,
            "x" * 10 + f"... [truncated {20 + len(SENDER_MARK.format('0012'))} characters]",
            id="not-a-plain-number",
        ),
        pytest.param(
            "x" * 30 + SENDER_MARK.format(970) + "!",
            10,
            "x" * 10 + f"... [truncated {21 + len(SENDER_MARK.format(970))} characters]",
            id="not-at-the-end",
        ),
    ],
)
def test_a_senders_own_mark_is_counted_apart_when_the_host_cuts_again(
    text: str, limit: int, expected: str
) -> None:
    """What the sender cut, by its own mark at the end of the text, is kept beside the count
    of what the host cut; a mark with no plain count, or not at the end, is only text."""
    assert clean_text(text, limit) == expected
    if text.isprintable():
        assert cap_text(text, limit) == expected


@PROPERTY
@given(text=hostile_texts)
def test_no_cleaned_continuation_line_starts_at_column_zero(text: str) -> None:
    """For any text, every line of clean_text's result after the first starts with white space."""
    cleaned = clean_text(text, LIMIT)
    for line in cleaned.splitlines()[1:]:
        assert line == "" or line[0] in " \t", (text, cleaned)
    assert not CONTROLS & set(cleaned), (text, cleaned)


#: "module.base" in Russian.
MODULE_BASE = "\u043c\u043e\u0434\u0443\u043b\u044c.\u0431\u0430\u0437\u0430"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("plugin name/with\x1bjunk", "plugin_name_with_junk", id="junk"),
        pytest.param("a..b", "a.b", id="empty-component"),
        pytest.param(".a.b.", "a.b", id="edge-dots"),
        pytest.param("...", "", id="only-dots"),
        pytest.param("ok.name-1:x_y", "ok.name-1:x_y", id="already-clean"),
        pytest.param("../../etc/passwd", "_._etc_passwd", id="path"),
        pytest.param(MODULE_BASE, None, id="cyrillic"),
        pytest.param("\u65e5\u672c.\u4e2d\u6587", None, id="cjk"),
        pytest.param("app.\u00fcn\u00ef:v\u00b2", None, id="latin-accents-superscript"),
        pytest.param("\u092e\u0949\u0921\u094d\u092f\u0942\u0932", None, id="devanagari-marks"),
        pytest.param("cafe\u0301.\u0661\u0662", None, id="combining-accent-arabic-digits"),
        pytest.param("a.\u0301b", "a._b", id="mark-after-a-dot"),
        pytest.param("\u0338x", "_x", id="mark-first"),
        pytest.param("a\u200db\u202ec", "a_b_c", id="format-characters"),
        pytest.param("a\u3000b\u2028c", "a_b_c", id="unicode-spaces-separators"),
        pytest.param("a\uff0eb\u2024c", "a_b_c", id="dot-lookalikes"),
        pytest.param("x\U0001f680y", "x_y", id="emoji"),
    ],
)
def test_clean_logger_name_replaces_junk_and_drops_empty_components(
    name: str, expected: str | None
) -> None:
    """Letters, digits and their marks of any script stay (None: the name as it is); controls,
    format characters, spaces, slashes, symbols and look-alike dots become '_'; empty
    components and edge dots disappear."""
    expected = name if expected is None else expected
    assert clean_logger_name(name, 100) == expected


def test_clean_logger_name_caps_the_length_without_a_trailing_dot() -> None:
    """A long name is cut to the limit, and a cut that ends on a dot loses the dot."""
    assert clean_logger_name("a" * 1000, 50) == "a" * 50
    assert clean_logger_name("a" * 49 + ".b", 50) == "a" * 49


@pytest.mark.parametrize("unit", ["x", ".", "a.", "/", "\x1b", ". "])
def test_clean_logger_name_handles_a_megabyte_quickly(unit: str) -> None:
    """A 1 MB name of any make-up is cleaned and capped well within a second."""
    name = unit * (1_000_000 // len(unit))
    start = time.perf_counter()
    cleaned = clean_logger_name(name, 200)
    assert time.perf_counter() - start < 1.0
    assert len(cleaned) <= 200


@PROPERTY
@given(name=hostile_texts | st.text(alphabet="a._/ ", max_size=40), limit=st.integers(1, 30))
def test_clean_logger_names_are_always_safe(name: str, limit: int) -> None:
    """Any name cleans to letters and digits of any script, combining marks after one, and
    _-.: only, with no '..' and no edge dots."""
    cleaned = clean_logger_name(name, limit)
    base = ""
    for char in cleaned:
        if unicodedata.category(char)[0] == "M":
            assert base.isalnum(), cleaned  # a mark draws over the letter or digit before it
        else:
            assert char.isalnum() or char in "_-.:", cleaned
            base = char
    assert ".." not in cleaned
    assert not cleaned.startswith(".")
    assert not cleaned.endswith(".")
    assert len(cleaned) <= limit


#: A logger-name component of letters and digits of any script.
name_words = st.text(
    alphabet=st.characters(
        categories=["Lu", "Ll", "Lo", "Nd"],
        # The Hangul fillers: letters that show as nothing (test_sanitize_invisible.py).
        exclude_characters="\u115f\u1160\u3164\uffa0",
    ),
    min_size=1,
    max_size=8,
)


@PROPERTY
@given(words=st.lists(name_words, min_size=1, max_size=4))
def test_a_name_of_letters_and_digits_of_any_script_stays_as_it_is(words: list[str]) -> None:
    """So that two different loggers never arrive merged under one name."""
    name = ".".join(words)
    assert clean_logger_name(name, 200) == name
