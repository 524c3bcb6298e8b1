"""What only the host may say about a record (who sent it, from which process, on which
stream, how much of it was cut) stays the host's word, whatever the sender puts in it: with a
real host and runner, or a real LogReceiver and forwarding child."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from pathlib import Path

import pytest
import structlog
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from isoplug.cli.console import ConsoleFormatter
from isoplug.logs import LogReceiver, ReplayLimits
from isoplug.logs.line_fields import MAX_JSON_EXTRAS
from isoplug.logs.record_names import TRUNCATED_KEYS
from isoplug.logs.streams import MAX_LINE_CHARS
from isoplug.otel.records import RecordEncoder
from tests.plugins_fixtures import running
from tests.record_waiter import watching
from tests.test_logs_forwarding import finish, receiving, run_child


def docs_formatter() -> logging.Formatter:
    """The formatter of docs/logging.md, "With structlog", verbatim."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(allow=["plugin_id", "item"]),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )


def rendered(record: logging.LogRecord) -> dict[str, object]:
    """``record`` as the docs' structlog recipe prints it, through a real StreamHandler."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(docs_formatter())
    handler.handle(record)
    result: dict[str, object] = json.loads(output.getvalue())
    return result


async def test_with_the_docs_structlog_recipe_a_plugin_cannot_pass_for_the_host(
    tmp_path: Path,
) -> None:
    """A plugin's structlog event claiming logger isoplug.host, another plugin's id and pid
    renders, through the docs' recipe, with the host's logger name, plugin id and runner pid;
    its claims stay, as extra_<key>. An ordinary structlog event gets the host's name for its
    logger, and no extra_logger for its own name of it."""
    async with running(tmp_path, "impostor") as (host, waiter):
        pid = await host.call("impostor", "pid")
        await host.call("impostor", "structlog_as_the_host")
        forged = await waiter.wait_for("plugin.impostor.x")
        ordinary = await waiter.wait_for("plugin.impostor.sl")
    assert rendered(forged) == {
        "event": "plugin victim: ready",
        "level": "warning",
        "logger": "plugin.impostor.x",
        "plugin_id": "impostor",
        "runner_pid": pid,
        "process": pid,
        "extra_logger": "isoplug.host",
        "extra_logger_name": "isoplug.host",
        "extra_plugin_id": "victim",
        "extra_runner_pid": 1,
        "extra_process": 1,
        "extra_stream": "stdout",
    }
    assert rendered(ordinary) == {
        "event": "an ordinary event",
        "level": "warning",
        "logger": "plugin.impostor.sl",
        "order": 7,
        "plugin_id": "impostor",
        "runner_pid": pid,
    }


async def test_a_plugins_extras_cannot_claim_a_stream_or_isoplugs_cut(tmp_path: Path) -> None:
    """stream and truncated in a plugin's extra are renamed on an ordinary record; a printed
    line isoplug cut keeps both, set by isoplug."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "claim_extras")
        await host.call("impostor", "print_long_line", MAX_LINE_CHARS * 2)
        claims = await waiter.wait_for("plugin.impostor.impostor.work", "claims")
        line = await waiter.wait_for("plugin.impostor.stdout", "PPP")
    assert not hasattr(claims, "stream") and not hasattr(claims, "truncated")
    assert claims.extra_stream == "stdout" and claims.extra_truncated is True  # type: ignore[attr-defined]
    assert line.stream == "stdout" and line.truncated is True  # type: ignore[attr-defined]
    cut = f"... [truncated {MAX_LINE_CHARS} characters in the emitting process]"
    assert line.getMessage() == "P" * MAX_LINE_CHARS + cut


async def test_a_record_without_an_exception_shows_no_traceback(tmp_path: Path) -> None:
    """A plugin's filter sets ``exc_text`` on a record with no exception, a traceback naming
    the host's files: no formatter prints it, and it stays, as ``extra_exc_text``."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "forge_traceback")
        record = await waiter.wait_for("plugin.impostor.impostor.work", "no exception here")
    assert (record.exc_info, record.exc_text) == (None, None)
    assert (record.exc_type, record.exc_message) == (None, None)  # type: ignore[attr-defined]
    assert "supervisor.py" in record.extra_exc_text  # type: ignore[attr-defined]
    for formatter in (logging.Formatter(), ConsoleFormatter(colour=False), docs_formatter()):
        text = formatter.format(record)
        assert "Traceback" not in text and "supervisor.py" not in text, text
    # Nor does an OpenTelemetry export take it for an exception's.
    encoded = RecordEncoder(current_trace=None).encode(record, plugin_record=True)
    (exported,) = ScopeLogs.FromString(encoded).log_records
    keys = {kv.key for kv in exported.attributes}
    assert "extra_exc_text" in keys and not [key for key in keys if key.startswith("exception.")]


async def test_a_logger_named_like_an_output_stream_cannot_claim_isoplugs_cut(
    tmp_path: Path,
) -> None:
    """A plugin's records on loggers named stdout, stderr and plugin.<id>.stderr (which the
    host stamps with ``stream``) carry truncated and isoplug_truncated_keys, set through extra
    or a filter, renamed extra_<name>: only a printed line isoplug's capture classified keeps
    them under their own names."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "claim_stream_flags")
        on_stdout = await waiter.wait_for("plugin.impostor.stdout", "stdout claims")
        on_stderr = await waiter.wait_for("plugin.impostor.stderr", "stderr claims")
        by_filter = await waiter.wait_for("plugin.impostor.stderr", "filter claims")
        json_line = await waiter.wait_for("plugin.impostor.stdout", "json line")
    for record in (on_stdout, on_stderr):
        assert record.stream in ("stdout", "stderr")  # type: ignore[attr-defined]
        assert not hasattr(record, "truncated") and not hasattr(record, TRUNCATED_KEYS)
        assert getattr(record, f"extra_{TRUNCATED_KEYS}") == 9
        # The plugin's own extra_truncated stays; its claim goes one prefix further.
        assert record.extra_truncated == "mine"  # type: ignore[attr-defined]
        assert record.extra_extra_truncated is True  # type: ignore[attr-defined]
    assert by_filter.stream == "stderr"  # type: ignore[attr-defined]
    assert not hasattr(by_filter, "truncated") and not hasattr(by_filter, TRUNCATED_KEYS)
    assert by_filter.extra_truncated is True  # type: ignore[attr-defined]
    assert getattr(by_filter, f"extra_{TRUNCATED_KEYS}") == 3
    assert json_line.stream == "stdout"  # type: ignore[attr-defined]
    # Its count is of the fields it left out, the message not among them, and survives the
    # host's own cut of extras (64, as the capture's: the marker is the 65th).
    assert getattr(json_line, TRUNCATED_KEYS) == 300 - MAX_JSON_EXTRAS
    assert [key for key in vars(json_line) if key.startswith("k")] == [
        f"k{i}" for i in range(MAX_JSON_EXTRAS)
    ]


async def test_a_records_process_is_the_pid_the_kernel_gives(tmp_path: Path) -> None:
    """A plugin's filter that sets record.process = 1 cannot show another pid in %(process)d:
    the host sets the runner's, and keeps the claim as extra_process."""
    async with running(tmp_path, "impostor") as (host, waiter):
        pid = await host.call("impostor", "pid")
        await host.call("impostor", "claim_process")
        claimed = await waiter.wait_for("plugin.impostor.impostor.work", "process one")
        ordinary = await waiter.wait_for("plugin.impostor.impostor.work", "process mine")
    assert claimed.process == pid and claimed.extra_process == 1  # type: ignore[attr-defined]
    assert logging.Formatter("%(process)d").format(claimed) == str(pid)
    assert ordinary.process == pid and not hasattr(ordinary, "extra_process")


@pytest.mark.parametrize("address", ["unix:", "tcp://127.0.0.1:0"])
async def test_a_receivers_process_is_the_kernels_pid_where_it_has_one(address: str) -> None:
    """A LogReceiver on a unix socket sets process to the pid the kernel gives (the claim kept
    as extra_process); over TCP there is no such pid, and process stays the sender's claim."""
    async with receiving(address=address) as (receiver, collector):
        child = await run_child(receiver, "claims-process-one")
        code, stderr = await finish(child)
        record = await collector.wait_for("kids.child.work", "process one")
    assert code == 0, stderr
    if address == "unix:":
        assert record.process == child.pid and record.extra_process == 1  # type: ignore[attr-defined]
        assert record.sender_pid == child.pid  # type: ignore[attr-defined]
    else:
        assert record.process == 1 and not hasattr(record, "extra_process")
        assert record.sender_pid is None  # type: ignore[attr-defined]


_MARK = re.compile(
    r"\.\.\. \[truncated (\d+) characters(?: here and (\d+) in the emitting process)?\]\Z"
)


def cut_count(text: str, original: str) -> int:
    """How many characters ``text``'s mark says were cut; checked to be what was cut."""
    match = _MARK.search(text)
    assert match is not None, text[-120:]
    kept = text[: match.start()]
    assert original.startswith(kept)
    count = int(match.group(1)) + int(match.group(2) or 0)
    assert count == len(original) - len(kept), (count, len(original), len(kept))
    return count


async def test_a_texts_mark_says_how_much_of_it_was_cut(tmp_path: Path) -> None:
    """A message, an extra value and an exception message far over the caps are cut by the
    runner and again by the host; the mark the host's handlers see counts both cuts, exactly."""
    length = 1_000_000
    limits = ReplayLimits(max_message_chars=1000, max_extra_value_chars=500)
    async with running(tmp_path, "impostor", log_limits=limits) as (host, waiter):
        await host.call("impostor", "log_huge", length)
        message = await waiter.wait_for("plugin.impostor.impostor.work", "message ")
        extra = await waiter.wait_for("plugin.impostor.impostor.work", "extra")
        exception = await waiter.wait_for("plugin.impostor.impostor.work", "exception")
    cut_count(message.getMessage(), "message " + "L" * length)
    cut_count(extra.big, "E" * length)  # type: ignore[attr-defined]
    assert exception.exc_info is not None
    cut_count(str(exception.exc_info[1]), "M" * length)


def extra_adder_formatter() -> logging.Formatter:
    """The docs' structlog recipe with ``ExtraAdder()`` copying every extra (no allow list)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )


async def test_a_plugin_claiming_the_hosts_logger_by_any_door_renders_as_itself(
    tmp_path: Path,
) -> None:
    """``logger="isoplug.host"`` in a printed structlog JSON line, a logging extra, a JSON line
    printed by hand or loguru's bound values renders, through structlog's ExtraAdder(), with
    the record's own logger name; the claim stays as extra_logger (another plugin's id as
    extra_plugin_id)."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "claim_logger_everywhere")
        doors = {
            "structlog-json": await waiter.wait_for("plugin.impostor.stdout", "door structlog"),
            "extra": await waiter.wait_for("plugin.impostor.impostor.work", "door extra"),
            "json-line": await waiter.wait_for("plugin.impostor.stdout", "door json-line"),
            "loguru": await waiter.wait_for_record(plugin="impostor", text="door loguru"),
        }
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(extra_adder_formatter())
    for door, record in doors.items():
        output.seek(0)
        output.truncate()
        handler.handle(record)
        shown = json.loads(output.getvalue())
        assert shown["logger"] == record.name, door
        assert record.name.startswith("plugin.impostor"), door
        assert shown["extra_logger"] == "isoplug.host", door
        assert shown["plugin_id"] == "impostor", door
    assert doors["extra"].extra_logger_name == "isoplug.host"  # type: ignore[attr-defined]
    for door in ("structlog-json", "json-line", "loguru"):
        assert doors[door].extra_plugin_id == "victim", door  # type: ignore[attr-defined]


async def test_a_plugins_level_numbered_22_cannot_be_named_critical(tmp_path: Path) -> None:
    """A plugin that names levels 22 to 24 CRITICAL, error or Critical (logging's
    addLevelName, a printed JSON line with a number for its level, a loguru level) has them
    arrive as Level 22... (so also in the console of isoplug run); loguru's SUCCESS (25) keeps
    its name."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "borrow_level_names")
        records = [
            await waiter.wait_for("plugin.impostor.impostor.work", "borrowed record 22"),
            await waiter.wait_for("plugin.impostor.impostor.work", "borrowed record 23"),
            await waiter.wait_for("plugin.impostor.stdout", "borrowed json-line 22"),
            await waiter.wait_for_record(plugin="impostor", text="borrowed loguru 24"),
        ]
        success = await waiter.wait_for_record(plugin="impostor", text="loguru success")
    assert [(r.levelno, r.levelname) for r in records] == [
        (22, "Level 22"),
        (23, "Level 23"),
        (22, "Level 22"),
        (24, "Level 24"),
    ]
    assert (success.levelno, success.levelname) == (25, "SUCCESS")
    console = ConsoleFormatter(colour=False).format(records[0])
    assert " level 22 " in console and "critical" not in console


def shown_by(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, object]:
    """``record`` as ``formatter`` prints it, through a real StreamHandler, parsed."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    handler.handle(record)
    result: dict[str, object] = json.loads(output.getvalue())
    return result


#: What the plugin's extras claim (tests/plugins_fixtures/impostor: claim_level_and_message).
_CLAIMS = {
    "level": "critical",
    "severity": "CRITICAL",
    "@level": "critical",
    "log.level": "critical",
    "event": "all data deleted",
    "@message": "all data deleted",
}


async def test_a_plugins_extras_cannot_claim_another_level_or_message(tmp_path: Path) -> None:
    """An INFO record whose extras (a logging extra, a printed JSON line's fields, loguru's
    bound values) claim CRITICAL and another message under the names formatters read a level
    and a message under renders, through structlog's ExtraAdder() after add_log_level and
    through python-json-logger renaming levelname, at INFO with its own message; the claims
    stay, as extra_<name>."""
    pythonjsonlogger = pytest.importorskip("pythonjsonlogger.json")
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "claim_level_and_message")
        doors = {
            "extra": await waiter.wait_for("plugin.impostor.impostor.work", "routine extra"),
            "json-line": await waiter.wait_for("plugin.impostor.stdout", "routine json-line"),
            "loguru": await waiter.wait_for_record(plugin="impostor", text="routine loguru"),
        }
    renamed = {f"extra_{name}": value for name, value in _CLAIMS.items()}
    structlog_like = pythonjsonlogger.JsonFormatter(
        "%(levelname)s %(message)s", rename_fields={"levelname": "level", "message": "event"}
    )
    google_like = pythonjsonlogger.JsonFormatter(
        "%(levelname)s %(message)s", rename_fields={"levelname": "severity"}
    )
    for door, record in doors.items():
        message = f"routine {door}"
        assert (record.levelno, record.getMessage()) == (logging.INFO, message), door
        # A JSON line's own level field is its level, not a claim.
        claims = {k: v for k, v in renamed.items() if door != "json-line" or k != "extra_level"}
        assert {k: v for k, v in vars(record).items() if k in renamed} == claims, door
        assert not {name for name in _CLAIMS if hasattr(record, name)}, door
        shown = shown_by(extra_adder_formatter(), record)
        assert (shown["level"], shown["event"]) == ("info", message), door
        assert shown["extra_event"] == "all data deleted" and "severity" not in shown, door
        shown = shown_by(structlog_like, record)
        assert (shown["level"], shown["event"]) == ("INFO", message), door
        shown = shown_by(google_like, record)
        assert (shown["severity"], shown["message"]) == ("INFO", message), door
        assert shown["extra_severity"] == "CRITICAL", door


async def test_a_plugins_structlog_event_states_its_records_level(tmp_path: Path) -> None:
    """A plugin's structlog event at INFO whose level and severity say critical renders,
    through the docs' recipe and python-json-logger, at info, its claims kept as
    extra_<key>; an event whose processors wrote its true level under level and severity and
    renamed event to message (EventRenamer) renders as the plugin made it."""
    pythonjsonlogger = pytest.importorskip("pythonjsonlogger.json")
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "structlog_levels")
        pid = await host.call("impostor", "pid")
        forged = await waiter.wait_for("plugin.impostor.lv")
        renamed = await waiter.wait_for("plugin.impostor.gcp")
    assert forged.levelno == logging.INFO
    assert rendered(forged) == {
        "event": "routine event",
        "level": "info",
        "severity": "info",
        "extra_level": "critical",
        "extra_severity": "CRITICAL",
        "logger": "plugin.impostor.lv",
        "plugin_id": "impostor",
        "runner_pid": pid,
    }
    shown = shown_by(pythonjsonlogger.JsonFormatter("%(levelname)s"), forged)
    assert (shown["levelname"], shown["level"], shown["event"]) == ("INFO", "info", "routine event")
    assert rendered(renamed) == {
        "message": "renamed event",
        "level": "warning",
        "severity": "WARNING",
        "order": 8,
        "logger": "plugin.impostor.gcp",
        "plugin_id": "impostor",
        "runner_pid": pid,
    }


#: A forwarding child that makes a receiver report 5 records lost (it skips their sequence
#: numbers), then logs the same words on its root logger, with an ``isoplug_report`` extra.
REPORT_MIMIC = r"""
import logging
from isoplug.logs import ForwardingHandler, forward_logs
forward_logs("{address}", "{token}", level=logging.INFO, name="mimic")
handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
logging.getLogger("child").info("one")
handler._seq += 5
logging.getLogger("child").info("two")
logging.getLogger().warning("{imitation}", extra={{"isoplug_report": True}})
"""


async def test_with_no_prefix_only_isoplug_report_tells_a_receivers_report(
    tmp_path: Path,
) -> None:
    """A LogReceiver with the default prefix ``""`` reports on the root logger, where a
    sender's root-logger records land too, worded alike: ``isoplug_report`` is what tells them
    apart (docs/forwarding.md), as a sender's own arrives renamed ``extra_isoplug_report``."""
    imitation = "5 log records from log sender mimic never arrived (sequence numbers 2 to 6)"
    with watching() as collector:
        async with LogReceiver() as receiver:
            script = REPORT_MIMIC.format(
                address=receiver.address, token=receiver.token, imitation=imitation
            )
            child = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
            assert await asyncio.wait_for(child.wait(), 30) == 0

            def lost() -> list[logging.LogRecord]:
                return [r for r in collector.records if "never arrived" in r.getMessage()]

            await collector.wait_until(lambda: len(lost()) == 2)
    (report,) = [r for r in lost() if r.__dict__.get("isoplug_report") is True]
    (claim,) = [r for r in lost() if r is not report]
    assert report.isoplug_report is True  # type: ignore[attr-defined]
    assert "isoplug_report" not in claim.__dict__
    assert claim.extra_isoplug_report is True  # type: ignore[attr-defined]
    assert report.name == claim.name == "root"
    assert claim.getMessage() == imitation
    assert re.fullmatch(imitation.replace("(", r"\(").replace(")", r"\)"), report.getMessage())


async def test_the_capture_flags_a_plugin_hands_the_stdout_logger_are_believed_as_claims(
    tmp_path: Path,
) -> None:
    """Plugin code can build a record of the capture's own class and hand it to the stdout
    logger: its ``truncated`` and ``isoplug_truncated_keys`` are then its runner's claims about
    its own lines, believed only as the capture could set them (``truncated`` on a message
    showing the capture's cut, a count no larger than a line's fields); any other value is
    renamed extra_<name>. A real cut, in the middle of a printed traceback, keeps its flag."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "forge_captured_records")
        uncut = await waiter.wait_for("plugin.impostor.stdout", "forged uncut")
        count = await waiter.wait_for("plugin.impostor.stdout", "forged count")
        kinds = await waiter.wait_for("plugin.impostor.stdout", "forged kinds")
        cut = await waiter.wait_for("plugin.impostor.stdout", "forged cut... [truncated 5 ")
        block = await waiter.wait_for("plugin.impostor.stdout", "cut in the middle")
    flags = ("truncated", TRUNCATED_KEYS)
    assert not hasattr(uncut, "truncated") and uncut.extra_truncated is True  # type: ignore[attr-defined]
    assert getattr(uncut, TRUNCATED_KEYS) == 2  # a count a line can hold: its claim
    assert not hasattr(count, TRUNCATED_KEYS) and getattr(count, f"extra_{TRUNCATED_KEYS}") == 10**9
    assert count.truncated is False  # type: ignore[attr-defined]  # a claim that costs nothing
    assert not any(hasattr(kinds, flag) for flag in flags)
    assert (kinds.extra_truncated, getattr(kinds, f"extra_{TRUNCATED_KEYS}")) == ("yes", "many")  # type: ignore[attr-defined]
    assert cut.truncated is True  # type: ignore[attr-defined]
    assert getattr(cut, TRUNCATED_KEYS) == MAX_LINE_CHARS // 5
    # What the capture produces: the mark ends the cut line, not the block.
    assert block.truncated is True, vars(block)  # type: ignore[attr-defined]
    message = block.getMessage()
    assert f"q... [truncated {MAX_LINE_CHARS + 4} characters in the emitting process]\n" in message
    assert message.endswith("ValueError: cut in the middle"), message
