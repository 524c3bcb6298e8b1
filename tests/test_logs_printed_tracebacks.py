"""A printed traceback becomes a record with a genuine ``exc_info``: the reading
(:mod:`isoplug.logs.traceback_text`, :mod:`isoplug.logs.printed_tracebacks`) against what
Python prints and against arbitrary text, its budget, and the records of real runners read by
the consumers that need the exception object (OpenTelemetry, structlog, python-json-logger)."""

from __future__ import annotations

import builtins
import json
import logging
import traceback
from pathlib import Path
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs import printed_tracebacks
from isoplug.logs.exceptions import exception_data
from isoplug.logs.printed_tracebacks import parse_printed_traceback, read_back
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData, FrameData
from isoplug.wire.sanitize import clean_text
from tests.log_helpers import CARET_LINE, otel_attributes
from tests.plugins_fixtures import running


def printed(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).rstrip("\n")


def raised(function: Any) -> BaseException:
    try:
        function()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def sent(error: BaseException) -> ExceptionData:
    """What a sender logging ``error`` would send."""
    data = exception_data(error)
    assert data is not None
    return data


def without_positions(data: ExceptionData) -> ExceptionData:
    """``data`` as text can say it: no columns; notes as lines of the message (after an empty
    message, as one note); a builtin's name without a module as the builtin's."""
    message, notes = "\n".join([data.message, *data.notes]), list[str]()
    if not data.message and data.notes:
        message, notes = "", ["\n".join(data.notes)]
    builtin = isinstance(getattr(builtins, data.type_name, None), type)
    return ExceptionData(
        type_name=data.type_name,
        module=(
            ("builtins" if builtin else "__main__")
            if data.module in ("builtins", "__main__")
            else data.module
        ),
        message=message,
        notes=notes,
        frames=[FrameData(f.filename, f.lineno, f.name, f.line) for f in data.frames],
        cause=without_positions(data.cause) if data.cause is not None else None,
        context=without_positions(data.context) if data.context is not None else None,
        suppress_context=data.cause is not None,
        members=[without_positions(member) for member in data.members],
    )


def _raise(error: BaseException) -> None:
    raise error


def grouped() -> None:
    """A group raised with a nested group, a member with a cause, and a member never raised."""
    try:
        _raise(BaseExceptionGroup("inner", [ValueError(1), raised(lambda: 1 / 0)]))
    except BaseExceptionGroup as inner:
        member = raised(chained)
        why = raised(lambda: _raise(ValueError("why")))
        raise BaseExceptionGroup("outer", [inner, member, KeyError("k")]) from why


def recurse(depth: int) -> None:
    if depth == 0:
        raise KeyError("bottom")
    recurse(depth - 1)


def chained() -> None:
    try:
        recurse(5)
    except KeyError as exc:
        raise RuntimeError("cannot configure") from exc


def implicit() -> None:
    try:
        {"present": 1}["missing"]
    except KeyError:
        int("x")


def two_lines_in_the_middle() -> None:
    """A chain whose middle exception's message has two lines."""
    try:
        try:
            dict[str, int]()["missing"]
        except KeyError:
            raise ValueError("inner\nsecond line")  # noqa: B904 # the context is the point
    except ValueError:
        raise RuntimeError("outer")  # noqa: B904


def noted() -> None:
    error = ValueError("two\nlines")
    error.add_note("a note")
    raise error


# -- the parser ---------------------------------------------------------------------------------


def test_chains_recursion_notes_and_carets_read_back_as_the_exception_was() -> None:
    """What a printed traceback says equals what the exception itself gives, save columns."""
    for function in (chained, implicit, noted, grouped, lambda: recurse(60)):
        error = raised(function)
        parsed = parse_printed_traceback(printed(error))
        assert parsed is not None, printed(error)
        assert parsed.exception == without_positions(sent(error)), printed(error)


def test_the_message_is_the_header_or_the_exceptions_first_line() -> None:
    text = printed(raised(noted))
    parsed = parse_printed_traceback(text)
    assert parsed is not None and parsed.message == "ValueError: two"
    headed = parse_printed_traceback("Exception in thread Thread-1 (work):\n" + text)
    assert headed is not None and headed.message == "Exception in thread Thread-1 (work):"
    assert headed.exception == parsed.exception
    # What logging writes above the traceback for log.exception("...") is its message too.
    led = parse_printed_traceback("ERROR:root:failed to parse\n" + text)
    assert led is not None and led.message == "ERROR:root:failed to parse"
    assert led.exception == parsed.exception
    bare = parse_printed_traceback(printed(raised(lambda: exec("raise StopIteration"))))
    assert bare is not None and bare.message == "StopIteration"
    assert bare.exception.module == "builtins"


def test_the_rebuilt_exception_prints_what_python_printed() -> None:
    """Save the carets (the rebuilt frames have no columns) and the continuation lines of a
    message, which the receiver indents (no text of the plugin's starts a line at column 0)."""
    rebuilder = ExceptionRebuilder()
    for function in (chained, implicit, grouped):
        text = printed(raised(function))
        parsed = parse_printed_traceback(text)
        assert parsed is not None
        again = logging.Formatter().formatException(rebuilder.rebuild(parsed.exception))
        assert again == CARET_LINE.sub("", text)


def test_text_that_python_did_not_print_so_stays_text() -> None:
    """Anything the parse cannot give back line for line is left alone: None."""
    real = printed(raised(chained))
    cases = {
        "a forged line among the frames": real.replace(
            "\n  File", "\nINFO isoplug.host: all plugins healthy\n  File", 1
        ),
        "a block cut before its exception line": real.rsplit("\n", 1)[0],
        "three identical frames Python would have counted": (
            "Traceback (most recent call last):\n"
            + '  File "a.py", line 1, in f\n' * 5
            + "ValueError: x"
        ),
        "a repeat count past the frames a record carries": (
            'Traceback (most recent call last):\n  File "a.py", line 1, in f\n'
            "  [Previous line repeated 996 more times]\nRecursionError: too deep"
        ),
        "a syntax error's display": printed(raised(lambda: compile("f(", "x.py", "exec"))),
        "a group past the 15 members Python prints": printed(
            raised(lambda: _raise(ExceptionGroup("g", [ValueError(n) for n in range(16)])))
        ),
        "no exception line at all": 'Traceback (most recent call last):\n  File "a.py"',
        "a type that is not a name": real.replace("RuntimeError:", "Runtime Error:"),
        "not a traceback": "ValueError: x",
    }
    for why, text in cases.items():
        assert parse_printed_traceback(text) is None, why


def test_a_source_line_the_file_does_not_have_keeps_the_traceback_text() -> None:
    """The rebuilt frames read their source lines from the files: a printed line that is not
    the file's (a file changed since, or not readable here, or a forged line) would not be
    shown, so such a traceback stays text; printed as the file has it, it reads back."""
    text = printed(raised(chained))
    assert read_back(text, ExceptionRebuilder()) is not None
    forged = text.replace("recurse(depth - 1)", "INFO isoplug.host: all plugins healthy", 1)
    assert parse_printed_traceback(forged) is not None  # the text alone reads back...
    assert read_back(forged, ExceptionRebuilder()) is None  # ...but the file says otherwise
    elsewhere = text.replace(__file__, "/nowhere/plugin.py")
    assert read_back(elsewhere, ExceptionRebuilder()) is None


_names = st.text("abcdefgh_", min_size=1, max_size=8)
_texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@st.composite
def exceptions(draw: st.DrawFn, depth: int = 0) -> ExceptionData:
    frames = draw(
        st.lists(
            st.builds(
                FrameData,
                filename=st.just("/nowhere/a.py") | st.builds(lambda n: f"/nowhere/{n}.py", _names),
                # Often the same few lines: a recursion, which Python counts past 3 frames.
                lineno=st.integers(1, 2) | st.integers(1, 5000) | st.none(),
                name=st.just("<module>") | _names,
            ),
            max_size=12,
        )
    )
    below = draw(st.none() | exceptions(depth + 1)) if depth < 3 else None
    link = draw(st.sampled_from(["cause", "context"]))
    members = draw(st.lists(exceptions(depth + 1), max_size=2)) if depth < 2 else []
    group_types = ["ExceptionGroup", "BaseExceptionGroup", "Custom"]
    return ExceptionData(
        type_name=draw(
            st.sampled_from(group_types if members else ["ValueError", "KeyError", "Custom"])
        ),
        module=draw(st.sampled_from(["builtins", "__main__", "pkg.errors"])),
        message=draw(_texts),
        frames=frames,
        notes=draw(st.lists(_texts, max_size=2)),
        cause=below if link == "cause" else None,
        context=below if link == "context" else None,
        members=members,
    )


@settings(max_examples=120, deadline=None)
@given(exceptions())
def test_any_exception_python_prints_reads_back(data: ExceptionData) -> None:
    """Any exception (rebuilt from random frames, messages, notes and chains, then printed by
    Python) reads back as the exception the sender would have sent, when every frame of it is
    one Python prints; where the text is ambiguous (a message holding what looks like a chain),
    the parse may decline, never lose a line."""
    error = ExceptionRebuilder().rebuild(data)[1]
    text = printed(error)
    parsed = parse_printed_traceback(text)
    expected = without_positions(sent(error))
    if parsed is None:
        assert "Traceback (most recent call last):" not in text or _ambiguous(expected)
        return
    if parsed.exception != expected:
        assert _ambiguous(expected)
        lines = set(CARET_LINE.sub("", text).split("\n"))
        rebuilt = logging.Formatter().formatException(
            ExceptionRebuilder().rebuild(parsed.exception)
        )
        assert {line.strip() for line in lines} <= {
            line.strip() for line in [parsed.message, *rebuilt.split("\n")]
        }


_FRAGMENTS = st.sampled_from(
    [
        "Traceback (most recent call last):",
        "Exception Group Traceback (most recent call last):",
        "  + Exception Group Traceback (most recent call last):",
        '  File "a.py", line 1, in f',
        '  File "a.py", line 99999999999999999999, in f',
        '  File "a.py", line None, in <module>',
        "    f()",
        "    ~~^^",
        "  [Previous line repeated 2 more times]",
        "  [Previous line repeated 99999999999999 more times]",
        "ValueError: boom",
        "ValueError",
        "pkg.mod.Error: x",
        "",
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
        "  +-+---------------- 1 ----------------",
        "    +---------------- 2 ----------------",
        "    +------------------------------------",
        "  | ValueError: 1",
        "    | TypeError: 2",
        "  | ",
        "Exception in thread T:",
        "INFO isoplug.host: all plugins healthy",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(max_size=12), max_size=25))
def test_any_text_reads_back_or_stays_text_never_raises(lines: list[str]) -> None:
    """Whatever a plugin prints (fragments of tracebacks in any order, absurd numbers, forged
    lines): the parse never raises, and what it accepts names every line it was given, save
    the carets and extra source lines a frame's file gives back."""
    text = "\n".join(["Traceback (most recent call last):", *lines])
    read = read_back(text, ExceptionRebuilder())
    if read is None:
        return
    parsed, (_, value, _) = read
    shown = {line.strip() for line in [parsed.message, *printed(value).split("\n")]}
    for line in text.split("\n"):
        # As the receiver shows it: control characters escaped.
        stripped = clean_text(line, 1 << 20).strip().lstrip("|").strip()
        if line.startswith("    ") and not stripped.strip("~^"):
            continue  # carets
        assert stripped in shown or any(stripped in each for each in shown), (line, text)


def _ambiguous(data: ExceptionData | None) -> bool:
    """True if a text of ``data`` could read as another structure: a blank line, a "Traceback"
    line or a line Python prints between chained exceptions, inside a message; or a frame
    that shares its file, line and function with the one before (a repeat count)."""
    while data is not None:
        if "\n" in data.message and (
            "Traceback" in data.message or "exception" in data.message or "\n\n" in data.message
        ):
            return True
        if "\n  File" in data.message or data.message.endswith("\n"):
            return True
        if data.notes and data.notes[-1][-1:] in ("", "\n"):
            return True  # a trailing blank line: the end of a block, as printed() strips it
        data = data.cause or data.context
    return False


# -- real runners, and the consumers that read exc_info -----------------------------------------


async def test_print_exc_in_a_plugin_arrives_with_its_exception(tmp_path: Path) -> None:
    """``traceback.print_exc()`` in a runner: one ERROR record on the stream's logger, located
    at the print, its message the exception's line and its exc_info the exception, chain,
    recursion, the message's second line and the note included (the traceback module wrote
    them: they belong to the block); OpenTelemetry, structlog and python-json-logger read it."""
    async with running(tmp_path, "printer") as (host, waiter):
        text = await host.call("printer", "print_chained_traceback")
        record = await waiter.wait_for("plugin.printer.stderr", "LookupError: no parser for")
    # The message's lines after its first, and the note, are the host's indented lines; the
    # carets (3.13 prints them under calls) are not printed again.
    text = text.rstrip("\n").replace("\nthis input\ntried: int", "\n  this input\n  tried: int")
    text = CARET_LINE.sub("", text)
    # Stopped: every line has arrived, and none of the block's is a record of its own.
    assert not waiter.matching("plugin.printer.stderr", "this input")
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "LookupError: no parser for"
    assert record.pathname.endswith("printer_plugin.py")
    assert record.exc_info is not None
    kind, value, tb = record.exc_info
    assert kind is not None and kind.__name__ == "LookupError" and tb is not None
    assert value is not None and isinstance(value.__cause__, ValueError)
    assert logging.Formatter().formatException(record.exc_info) == text
    _assert_consumers_read(record, text)


async def test_tracebacks_on_fd_2_arrive_with_their_exceptions(tmp_path: Path) -> None:
    """The same for tracebacks the host reads from the runner's fd 2 (C code, a child): a
    chained one, an exception group with a nested group and a chained member, and a chain
    whose middle message has two lines (the chain line after the second proves it the
    message's); ``exc_type`` and ``exc_message`` say what a logged exception's would."""
    chain, group, middle = raised(chained), raised(grouped), raised(two_lines_in_the_middle)
    async with running(tmp_path, "scribbler") as (host, waiter):
        for error in (chain, group, middle):
            await host.call("scribbler", "write", fd=2, text=printed(error) + "\n")
        await host.call("scribbler", "write", fd=2, text="after them\n")
        await waiter.wait_for("plugin.scribbler.stderr", "after them")
    records = [r for r in waiter.records if r.name == "plugin.scribbler.stderr"]
    assert [r.getMessage() for r in records] == [
        "RuntimeError: cannot configure",
        "ExceptionGroup: outer (3 sub-exceptions)",
        "RuntimeError: outer",
        "after them",
    ]
    for record, error in zip(records, (chain, group, middle), strict=False):
        assert record.levelno == logging.ERROR and record.pathname == "<stderr>"
        assert record.exc_info is not None
        assert record.exc_type == f"builtins.{type(error).__name__}"  # type: ignore[attr-defined]
        assert record.exc_message == str(error)  # type: ignore[attr-defined]
        # The host indents a message's second line, as it does a logged one's.
        expected = CARET_LINE.sub("", printed(error)).replace("\nsecond line", "\n  second line")
        assert logging.Formatter().formatException(record.exc_info) == expected
        _assert_consumers_read(record, expected)
    value = records[1].exc_info[1] if records[1].exc_info else None
    assert isinstance(value, ExceptionGroup) and len(value.exceptions) == 3
    assert isinstance(value.exceptions[1].__cause__, KeyError)


async def test_a_childs_log_exception_is_one_record_a_print_before_a_traceback_two(
    tmp_path: Path,
) -> None:
    """A child process whose ``log.exception()`` writes ``ERROR:child:failed`` and then the
    traceback (Python's default format, ``basicConfig()``): one ERROR record with that message
    and the exception, as the child's logger would have. A plain line printed right before
    ``traceback.print_exc()``, even read with it, is a record of its own, and the traceback
    another: nothing says they belong together (logging's last resort, which writes a bare
    message, reads the same). So is a WARNING log line printed well before a traceback."""
    child = (
        "import logging, sys, time, traceback\n"
        "logging.basicConfig()\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('child').exception('failed to divide')\n"
        "    print('a line of its own', file=sys.stderr, flush=True)\n"
        "    traceback.print_exc()\n"
        "    sys.stderr.flush()\n"
        "    time.sleep(0.3)\n"
        "    logging.getLogger('child').warning('then this')\n"
        "    time.sleep(0.3)\n"
        "    traceback.print_exc()\n"
        "    print('after them', file=sys.stderr)\n"
    )
    # A file of its own: a traceback shows its source lines (Python 3.13 shows `-c` code's
    # too), which a read-back checks against the file.
    script = tmp_path / "child.py"
    script.write_text(child)
    run = f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    async with running(tmp_path, "scribbler") as (host, waiter):
        assert await host.call("scribbler", "run_python", run) == 0
        await waiter.wait_for("plugin.scribbler.stderr", "after them")
    records = [r for r in waiter.records if r.name == "plugin.scribbler.stderr"]
    division = "ZeroDivisionError: division by zero"
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", "ERROR:child:failed to divide"),
        ("WARNING", "a line of its own"),
        ("ERROR", division),
        ("WARNING", "WARNING:child:then this"),
        ("ERROR", division),
        ("WARNING", "after them"),
    ]
    for record in (records[0], records[2], records[4]):
        assert record.exc_info is not None and record.exc_info[0] is not None
        assert record.exc_info[0].__name__ == "ZeroDivisionError"
        assert logging.Formatter().formatException(record.exc_info).endswith(division)


def test_the_read_back_budget_refills_at_its_rate() -> None:
    now = [1000.0]
    budget = printed_tracebacks.read_back_budget(lambda: now[0])
    burst = int(printed_tracebacks.READ_BACK_BURST)
    assert all(budget.take() for _ in range(burst)) and not budget.take()
    now[0] += 0.5
    refilled = int(0.5 * printed_tracebacks.READ_BACK_RATE)
    assert sum(budget.take() for _ in range(burst)) == refilled


async def test_tracebacks_past_the_read_back_budget_arrive_whole_as_text(tmp_path: Path) -> None:
    """A child printing tracebacks in a loop: past the host's budget they stay text, each one
    record, none lost."""
    text = printed(raised(chained)) + "\n"
    # Past the burst by 4 s of refill: a slow machine replaying them cannot read all back.
    count = int(printed_tracebacks.READ_BACK_BURST + 4 * printed_tracebacks.READ_BACK_RATE)
    async with running(tmp_path, "scribbler") as (host, waiter):
        await host.call("scribbler", "write", fd=2, text=text * count + "after them\n")
        await waiter.wait_for("plugin.scribbler.stderr", "after them")
    records = [r for r in waiter.records if r.name == "plugin.scribbler.stderr"][:-1]
    assert len(records) == count
    read_back = [r for r in records if r.exc_info is not None]
    # The budget refills while they are replayed: a few more than the burst may be read back.
    assert int(printed_tracebacks.READ_BACK_BURST) <= len(read_back) < count
    as_text = [r for r in records if r.exc_info is None]
    assert all(r.getMessage() == clean_text(text.rstrip("\n"), 1 << 20) for r in as_text)


def _assert_consumers_read(record: logging.LogRecord, stacktrace: str) -> None:
    from pythonjsonlogger.json import JsonFormatter

    assert record.exc_info is not None and record.exc_info[0] is not None
    type_name = record.exc_info[0].__name__
    attributes = otel_attributes(record)
    assert attributes["exception.type"] == type_name
    # The SDK writes str(args[0]): a group's is its message without the count.
    assert attributes["exception.message"] == str(record.exc_info[1].args[0])
    assert attributes["exception.stacktrace"] == stacktrace + "\n"
    structured = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    )
    output = json.loads(structured.format(record))
    assert output["event"] == record.getMessage() and output["exception"] == stacktrace
    assert json.loads(JsonFormatter().format(record))["exc_info"] == stacktrace
