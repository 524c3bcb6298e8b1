"""Structure from text: JSON lines, level prefixes and tracebacks become records."""

from __future__ import annotations

import json
import logging
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs.line_fields import level_from_name, parse_json_line, parse_logfmt_line
from isoplug.logs.textlines import (
    MAX_BLOCK_LINES,
    MAX_MESSAGE_LINES,
    REDRAWN_LEVEL,
    LineClassifier,
    TextRecord,
    is_plain_line,
    is_terminal_drawing,
    leads_a_traceback,
    redrawn,
)

#: The starts of everything the classifier makes more of than a plain line.
_SPECIAL_STARTS = [
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
    "Exception Group Traceback (most recent call last):",
    "Exception in thread Thread-1:",
    "Exception ignored in: <function f>",
    "Unhandled exception in thread started by f",
    "Fatal Python error: Segmentation fault",
    "Fatal Python error from unexpected signum: 99",
    "Windows fatal exception: access violation",
    "Timeout (0:00:05)!",
    "ERROR: disk full",
    "warning: slow",
    "[crit] on fire",
    "<info> started",
    '{"level": "error", "message": "m"}',
]


def classify(text: str, default: int = logging.WARNING) -> list[TextRecord]:
    classifier = LineClassifier(default)
    records: list[TextRecord] = []
    for line in text.split("\n"):
        records += classifier.feed(line)
    return records + classifier.flush()


def formatted(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).rstrip("\n")


def raised(make: type[BaseException] | BaseException) -> BaseException:
    try:
        raise make
    except BaseException as error:
        return error


@settings(max_examples=400)
@given(
    line=st.one_of(
        st.text(max_size=30),
        st.builds(
            lambda start, cut, rest: start[:cut] + rest,
            st.sampled_from(_SPECIAL_STARTS),
            st.integers(0, 60),
            st.text(max_size=10),
        ),
    ),
    fatal_blocks=st.booleans(),
)
def test_a_line_said_plain_is_what_the_classifier_returns_unchanged(
    line: str, fatal_blocks: bool
) -> None:
    """The fast paths that skip the classifier (a printed line's in the runner, the host's
    fd-level reader) take a line as plain only where the classifier would return it as is."""
    classifier = LineClassifier(logging.INFO, fatal_blocks=fatal_blocks)
    if is_plain_line(line, fatal_blocks):
        assert classifier.feed(line) == [TextRecord(logging.INFO, line)]
        assert not classifier.holding


def test_every_special_start_is_sent_to_the_classifier() -> None:
    for line in _SPECIAL_STARTS:
        assert not is_plain_line(line, fatal_blocks=True), line


def test_plain_lines_keep_the_default_level() -> None:
    """A line with no structure is one record at the stream's default level."""
    assert classify("hello\nworld", logging.INFO) == [
        TextRecord(logging.INFO, "hello"),
        TextRecord(logging.INFO, "world"),
    ]


def test_level_prefixes_set_the_level_and_keep_the_text() -> None:
    """``LEVEL:``, ``[LEVEL]`` and ``<LEVEL>`` set the level; prose that starts with a level
    word does not."""
    lines = ["ERROR: disk full", "[warning] slow", "<debug> x", "info: y", "Error handling is hard"]
    records = classify("\n".join(lines), logging.INFO)
    assert [(r.level, r.message) for r in records] == [
        (logging.ERROR, "ERROR: disk full"),
        (logging.WARNING, "[warning] slow"),
        (logging.DEBUG, "<debug> x"),
        (logging.INFO, "info: y"),
        (logging.INFO, "Error handling is hard"),
    ]


def test_pythons_default_logging_format_sets_the_level() -> None:
    """``LEVEL:logger:message``, what ``logging.basicConfig()`` prints by default (a child
    process's stderr), sets the level; a colon prefix followed by no logger name does not."""
    lines = [
        "ERROR:root:err msg",
        "DEBUG:app.db-pool:x: y",
        "CRITICAL:__main__:",
        "ERROR:disk full: yes",
        "error:",
    ]
    records = classify("\n".join(lines), logging.WARNING)
    assert [r.level for r in records] == [
        logging.ERROR,
        logging.DEBUG,
        logging.CRITICAL,
        logging.WARNING,
        logging.ERROR,
    ]
    assert [r.message for r in records] == lines


def test_a_printed_warning_and_its_source_line_are_one_warning() -> None:
    """What ``warnings`` prints (a child process's warning) is one WARNING record with the
    source line under it; without a source line (``<string>``), the warning line alone."""
    text = "\n".join(
        [
            "/srv/app/jobs.py:12: DeprecationWarning: old call",
            "  warnings.warn('old call', DeprecationWarning)",
            "<string>:2: UserWarning: from -c",
            "next line",
            "jobs.py:3: my.pkg.CustomWarning: custom",
            "    indented by four: not a source line",
            "/srv/app/jobs.py:12: not a warning",
            "x.py:1: UserWarning: at the end",
        ]
    )
    records = classify(text, logging.INFO)
    assert [(r.level, r.message) for r in records] == [
        (
            logging.WARNING,
            "/srv/app/jobs.py:12: DeprecationWarning: old call\n"
            "  warnings.warn('old call', DeprecationWarning)",
        ),
        (logging.WARNING, "<string>:2: UserWarning: from -c"),
        (logging.INFO, "next line"),
        (logging.WARNING, "jobs.py:3: my.pkg.CustomWarning: custom"),
        (logging.INFO, "    indented by four: not a source line"),
        (logging.INFO, "/srv/app/jobs.py:12: not a warning"),
        (logging.WARNING, "x.py:1: UserWarning: at the end"),
    ]
    assert not any(r.traceback for r in records)
    # Named as a warning the runner logs names its category; not a builtin: as printed.
    assert [r.extra.get("category") for r in records if r.level == logging.WARNING] == [
        "builtins.DeprecationWarning",
        "builtins.UserWarning",
        "my.pkg.CustomWarning",
        "builtins.UserWarning",
    ]


def test_a_logfmt_level_sets_the_level() -> None:
    """logfmt lines (logrus, Go's slog, structlog's KeyValueRenderer) set their level from
    their ``level`` pair; a line that does not start with a pair is prose."""
    lines = {
        'time="2026-12-07T06:59:25Z" level=error msg="lost the database"': logging.ERROR,
        "level=debug ts=1733561234.5 caller=db.go:12 msg=retry": logging.DEBUG,
        "ts=2026-12-07T06:59:25Z lvl=warn msg=slow": logging.WARNING,
        "event='paid' level='info' user=42": logging.INFO,
        "x = 5, level=error": logging.INFO,
        "a=1 b=2 msg=no level here": logging.INFO,
        "level=verbose msg=unknown level": logging.INFO,
    }
    records = classify("\n".join(lines), logging.INFO)
    messages = [
        "lost the database",
        "retry",
        "slow",
        "paid",
        "x = 5, level=error",
        # An unquoted value ends at a space: text between pairs, so the line stays whole.
        "a=1 b=2 msg=no level here",
        "level=verbose msg=unknown level",
    ]
    assert [(r.message, r.level) for r in records] == list(
        zip(messages, lines.values(), strict=True)
    )
    assert records[0].extra == {"time": "2026-12-07T06:59:25Z"}
    assert records[1].extra == {"ts": "1733561234.5", "caller": "db.go:12"}
    assert records[2].extra == {"ts": "2026-12-07T06:59:25Z", "lvl": "warn"}
    assert records[3].extra == {"user": "42"}
    assert is_plain_line("plain words, then level=error") and not is_plain_line("level=error")


def test_logfmt_lines_keep_quoted_values_and_only_pairs_count() -> None:
    """Quoted values keep their spaces and escapes; a line with text between its pairs, or
    without a message, is text (its level pair still sets the level)."""
    quoted = parse_logfmt_line(r'level=info msg="say \"hi\" twice" path="/a b" n=1')
    assert quoted == (logging.INFO, 'say "hi" twice', {"path": "/a b", "n": "1"})
    assert parse_logfmt_line("level=error some prose msg=x") is None
    assert parse_logfmt_line("level=error code=3") is None
    records = classify("level=error code=3", logging.INFO)
    assert [(r.level, r.message) for r in records] == [(logging.ERROR, "level=error code=3")]


def test_a_level_after_a_time_sets_the_level() -> None:
    """The usual formats that put the time first (Python's ``%(asctime)s %(levelname)s``,
    hclog's text, loguru's default sink, a bare clock), and glog's, set the level; after a
    time, a level word in lower case is prose."""
    lines = {
        "2026-12-07 06:59:25,123 ERROR app.db: lost": logging.ERROR,
        "2026-12-07T06:59:25.123Z [WARN]  plugin: slow": logging.WARNING,
        "2026-12-07T06:59:25+01:00 <debug> x": logging.DEBUG,
        "2026-12-07 06:59:25.123 | CRITICAL | app:main:12 - down": logging.CRITICAL,
        "2026-12-07 06:59:25.123 | INFO     | app:main:12 - up": logging.INFO,
        "[06:59:25] DEBUG: x": logging.DEBUG,
        "06:59:25.5 ERROR x": logging.ERROR,
        "06:59 ERROR x": logging.WARNING,
        "2026-12-07 06:59:25 Error handling is hard": logging.WARNING,
        "2026-12-07 06:59:25 NOTALEVEL x": logging.WARNING,
        "12 items ERROR": logging.WARNING,
        # glog and absl (gRPC's core, TensorFlow): the letter, date, time, thread, file:line]
        "E1207 06:59:25.123456  4242 fd.cc:12] connection lost": logging.ERROR,
        "I0000 00:00:1733561234.123456   17 config.cc:230] gRPC experiments": logging.INFO,
        "W1207 06:59:25.1 7 a/b.cc:1] slow": logging.WARNING,
        "F1207 06:59:25.1 7 a.cc:1] check failed": logging.CRITICAL,
        "E1207 is a code: not a glog line": logging.WARNING,
    }
    records = classify("\n".join(lines), logging.WARNING)
    assert [(r.message, r.level) for r in records] == list(lines.items())


def test_json_lines_of_the_usual_libraries() -> None:
    """structlog's JSONRenderer, hclog and loguru's serialize=True lines get their level and
    extras."""
    structlog_line = json.dumps({"event": "paid", "level": "debug", "user": 42, "tags": [1, 2]})
    hclog_line = json.dumps({"@level": "error", "@message": "boom", "@module": "db"})
    loguru_line = json.dumps(
        {
            "text": "x",
            "record": {
                "level": {"name": "SUCCESS", "no": 25},
                "message": "done",
                "extra": {"order": 7},
            },
        }
    )
    records = classify("\n".join([structlog_line, hclog_line, loguru_line]))
    assert records[0] == TextRecord(logging.DEBUG, "paid", {"user": 42, "tags": "[1,2]"})
    assert records[1] == TextRecord(logging.ERROR, "boom", {"@module": "db"})
    assert records[2].level == 25
    assert records[2].message == "done"
    assert records[2].extra["order"] == 7


def test_json_lines_with_absurd_content_keep_the_default_level() -> None:
    """Absurd levels, deep nesting and lines without a message never raise or invent a level."""
    assert parse_json_line(json.dumps({"level": 10**30, "msg": "x"})) == (None, "x", {})
    assert parse_json_line(json.dumps({"level": [1], "msg": "x"})) == (None, "x", {})
    assert parse_json_line('{"a":' * 1000 + "1" + "}" * 1000) is None
    assert parse_json_line(json.dumps({"no": "message"})) is None
    deep = {"msg": "x", "v": json.loads('{"a":' * 200 + "1" + "}" * 200)}
    _level, message, extras = parse_json_line(json.dumps(deep)) or (None, "", {})
    assert message == "x"
    assert isinstance(extras["v"], str)
    many = {"msg": "x", **{f"k{i}": i for i in range(1000)}}
    assert len((parse_json_line(json.dumps(many)) or (0, "", {}))[2]) <= 65
    assert level_from_name(True) is None
    assert level_from_name("Warn") == logging.WARNING


def test_a_chained_traceback_is_one_error_record() -> None:
    """A traceback with its cause and context chain is one record at ERROR."""
    try:
        try:
            raise KeyError("a")
        except KeyError as error:
            raise ValueError("b") from error
    except ValueError as error:
        text = formatted(error)
    records = classify(f"before\n{text}\nafter")
    assert [r.message for r in records] == ["before", text, "after"]
    assert records[1].level == logging.ERROR
    assert records[1].traceback


def test_lines_the_traceback_module_writes_after_the_exception_line_stay_in_the_block() -> None:
    """A message's later lines and the notes cannot be told from the next output by their text:
    fed as ``continues`` (the traceback module wrote them), they stay in the block; otherwise
    they are lines of their own."""
    error = ValueError("two\nlines")
    error.add_note("a note")
    text = formatted(raised(error))
    head = text.split("\nlines\n")[0]
    alone = [head, "lines", "a note", "after"]
    for continues, expected in ((True, [text, "after"]), (False, alone)):
        classifier = LineClassifier(logging.WARNING)
        records = []
        for line in text.split("\n"):
            records += classifier.feed(line, False, continues=continues)
        records += classifier.feed("after")
        records += classifier.flush()
        assert [r.message for r in records] == expected


def test_two_tracebacks_printed_one_after_the_other_are_two_records() -> None:
    """``print_exc()`` twice: the second traceback follows an exception line with no line of a
    chain between them, so it is a traceback of its own, not a part of the first."""
    first, second = formatted(raised(KeyError("a"))), formatted(raised(ValueError("b")))
    records = classify(f"{first}\n{second}\nafter")
    assert [r.message for r in records] == [first, second, "after"]
    assert all(r.traceback for r in records[:2])


def test_thread_and_unraisable_headers_belong_to_their_traceback() -> None:
    """``Exception in thread`` and ``Exception ignored in`` headers stay with the traceback."""
    body = formatted(raised(RuntimeError("x")))
    for header in ("Exception in thread worker (run):", "Exception ignored in: <function f>"):
        records = classify(f"{header}\n{body}")
        assert [r.message for r in records] == [f"{header}\n{body}"]


def test_a_line_led_into_a_traceback_is_its_message_at_its_level() -> None:
    """What logging writes for ``log.exception()`` with no handler (``failed`` over the
    traceback) or with a format that starts lines with the level: one record, at the line's
    level, else ERROR; the line ends no block and is kept whole."""
    body = formatted(raised(RuntimeError("x")))
    for lead, level in (
        ("failed to divide", logging.ERROR),
        ("ERROR:root:failed to divide", logging.ERROR),
        ("WARNING:app:retrying", logging.WARNING),
    ):
        classifier = LineClassifier(logging.WARNING)
        classifier.lead(lead)
        records: list[TextRecord] = []
        for line in f"{body}\nafter".split("\n"):
            records += classifier.feed(line)
        records += classifier.flush()
        assert [(r.level, r.message, r.traceback) for r in records] == [
            (level, f"{lead}\n{body}", True),
            (logging.WARNING, "after", False),
        ]


def test_plain_lines_after_an_exception_line_are_its_message_when_a_chain_follows() -> None:
    """With ``message_lines`` (fd-level text, whose writer cannot say which lines continue a
    block): plain lines after an exception line are held; a chain line after them makes them
    the rest of its message, anything else lines of their own, in order; past
    MAX_MESSAGE_LINES they are let go."""

    def fed(text: str) -> list[tuple[str, bool]]:
        classifier = LineClassifier(logging.WARNING, message_lines=True)
        out: list[TextRecord] = []
        for line in text.split("\n"):
            out += classifier.feed(line)
        return [(r.message, r.traceback) for r in out + classifier.flush()]

    first = formatted(raised(ValueError("inner\nsecond line\nthird")))
    chained_text = formatted(raised(KeyError("k")))
    whole = f"{first}\n\nDuring handling of the above exception, another exception occurred:"
    whole += f"\n\n{chained_text}"
    assert fed(whole + "\nafter") == [(whole, True), ("after", False)]
    alone = formatted(raised(ValueError("one line")))
    assert fed(f"{alone}\nnext\n\nmore\n[error] own level") == [
        (alone, True),
        ("next", False),
        ("", False),
        ("more", False),
        ("[error] own level", False),
    ]
    for line in ("ERROR:app:failed again", "a plain line"):
        assert fed(f"{alone}\n{line}\n{alone}") == [(alone, True), (line, False), (alone, True)]
    many = [f"line {n}" for n in range(MAX_MESSAGE_LINES + 1)]
    assert fed("\n".join([alone, *many])) == [(alone, True)] + [(m, False) for m in many]


def test_only_a_log_line_of_warning_or_more_leads_a_traceback() -> None:
    """A line that says its level, as a log record's does, is the message of a traceback
    right under it; a plain line (a print before print_exc()) is not, nor an INFO line."""
    for line, leads in (
        ("ERROR:root:failed to divide", True),
        ("WARNING:app:retrying", True),
        ("2026-12-07 06:59:25,123 ERROR app: failed", True),
        ("[error] failed", True),
        ("failed to divide", False),
        ("INFO:app:processing item 5", False),
        ("", False),
    ):
        assert leads_a_traceback(line) is leads, line


def test_an_exception_group_is_one_record() -> None:
    """An exception group's drawing, nested groups included, is one record."""
    error = raised(ExceptionGroup("eg", [ValueError("a"), ExceptionGroup("in", [TypeError("b")])]))
    text = formatted(error)
    records = classify(f"{text}\nafter")
    assert [r.message for r in records] == [text, "after"]


def test_a_forged_line_after_frames_stays_inside_the_block() -> None:
    """A forged log line where the exception line belongs is part of the traceback record (the
    receiver's sanitizer then indents it)."""
    text = 'Traceback (most recent call last):\n  File "x", line 1\nINFO isoplug.host: fine'
    assert [r.message for r in classify(text)] == [text]


def test_a_block_that_never_ends_is_emitted_in_parts() -> None:
    """A traceback that never ends comes out in parts of bounded size."""
    lines = ["Traceback (most recent call last):"] + ["  File 'x', line 1"] * (MAX_BLOCK_LINES * 3)
    records = classify("\n".join(lines))
    assert len(records) >= 3
    assert all(r.message.count("\n") < MAX_BLOCK_LINES for r in records)
    assert sum(r.message.count("\n") + 1 for r in records) == len(lines)


def test_a_crash_dump_is_one_critical_record() -> None:
    """faulthandler's dump is one record at CRITICAL."""
    dump = (
        "Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call "
        'first):\n  File "p.py", line 3 in crash\n\nExtension modules: msgspec._core (total: 1)'
    )
    records = classify(dump)
    assert [(r.level, r.message) for r in records] == [(logging.CRITICAL, dump)]


def test_holding_says_when_a_finished_traceback_waits_for_a_chain() -> None:
    """After a traceback's last line the classifier holds it until told to flush."""
    classifier = LineClassifier(logging.WARNING)
    text = formatted(raised(ValueError("x")))
    out: list[TextRecord] = []
    for line in text.split("\n"):
        out += classifier.feed(line)
    assert out == []
    assert classifier.holding
    assert [r.message for r in classifier.flush()] == [text]
    assert not classifier.holding


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=60))
def test_every_line_comes_out_exactly_once(lines: list[str]) -> None:
    """Whatever the lines, none is lost or duplicated (blank lines around blocks aside)."""
    lines = [line.replace("\n", " ") for line in lines]
    classifier = LineClassifier(logging.INFO)
    records: list[TextRecord] = []
    for line in lines:
        records += classifier.feed(line)
    records += classifier.flush()
    emitted = [part for r in records for part in r.message.split("\n") if part.strip()]
    expected = [line for line in lines if line.strip()]
    # JSON lines come out as their message, not their text: only compare the rest.
    if not any(line.lstrip().startswith("{") for line in lines):
        assert emitted == expected


@pytest.mark.parametrize(
    "line",
    [
        "WARNING: disk almost full",
        '{"level": "warning", "msg": "json warning"}',
        "2026-01-01 10:00:00,123 WARNING app: stamped warning",
        "WARNING:root:a child's warning",
        "level=warning msg=logfmt",
    ],
)
def test_a_redrawn_line_that_says_the_streams_level_keeps_it(line: str) -> None:
    """Said or not, the level is the stream's: only the line can tell them apart."""
    records = redrawn(LineClassifier(logging.WARNING).feed(line), logging.WARNING)
    assert [(r.level, r.leveled) for r in records] == [(logging.WARNING, True)]


def test_a_redrawn_line_that_says_no_level_is_info_on_stderr() -> None:
    records = redrawn(LineClassifier(logging.WARNING).feed("progress 20%"), logging.WARNING)
    assert [(r.level, r.message) for r in records] == [(REDRAWN_LEVEL, "progress 20%")]
    on_stdout = redrawn(LineClassifier(logging.INFO).feed("progress 20%"), logging.INFO)
    assert [r.level for r in on_stdout] == [logging.INFO]


_DRAWING_PIECES = st.sampled_from(
    [" ", "\t", "\r", "\x1b[A", "\x1b[2K", "\x1b[10;5H", "\x1b[?25l", "\x1b[0m", "\x1b7"]
)


@given(st.lists(_DRAWING_PIECES))
def test_blanks_and_cursor_movements_are_terminal_drawing(pieces: list[str]) -> None:
    assert is_terminal_drawing("".join(pieces))


@given(st.lists(_DRAWING_PIECES), st.lists(_DRAWING_PIECES), st.text(min_size=1))
def test_text_with_anything_visible_is_no_terminal_drawing(
    before: list[str], after: list[str], text: str
) -> None:
    visible = "".join(c for c in text if c.isprintable() and not c.isspace())
    if visible:
        assert not is_terminal_drawing("".join(before) + visible + "".join(after))
