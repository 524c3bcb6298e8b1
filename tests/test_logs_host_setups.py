"""A plugin's records in the host application's own logging setup, as its own records would be
(docs/logging.md): structlog's ``ProcessorFormatter`` and python-json-logger on a logged dict,
tools that show a traceback's frame variables, a handler that ships an exception to another
process, and a logger class of the application's. With a real host and runner."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from rich.console import Console
from rich.traceback import Traceback

from isoplug import Host
from tests.log_helpers import as_host_prints
from tests.plugins_fixtures import FAST, copy_plugins, running
from tests.record_waiter import watching
from tests.test_logs_host_truth import rendered, shown_by

WORK = "plugin.raiser.raiser.work"
STRUCTURED = "plugin.raiser.raiser.structured"


def _rendered_in_process(message: object) -> dict[str, object]:
    """What the docs' structlog recipe prints for ``log.error(message)`` of the host's own."""
    record = logging.LogRecord("host.mod", logging.ERROR, __file__, 1, message, None, None)
    return rendered(record)


async def test_a_logged_dict_is_a_foreign_record_and_a_structlog_event_structlogs(
    tmp_path: Path,
) -> None:
    """A dict the plugin logged with plain logging renders through the docs' recipe as the
    host's own does (its foreign_pre_chain runs: level, logger, and the host's plugin_id),
    while python-json-logger, which reads its keys, reads the host's truth there. A structlog
    event (wrap_for_formatter in the plugin) still renders as structlog's own."""
    pythonjsonlogger = pytest.importorskip("pythonjsonlogger.json")
    async with running(tmp_path, "raiser") as (host, waiter):
        await host.call("raiser", "log_dict")
        await host.call("raiser", "log_structlog_exception")
        logged = await waiter.wait_for(WORK, "payment failed")
        event = await waiter.wait_for(STRUCTURED)
    text = "{'order': 7, 'status': 'payment failed', 'plugin_id': 'bank'}"
    assert _rendered_in_process({"order": 7, "status": "payment failed", "plugin_id": "bank"}) == {
        "event": text,
        "level": "error",
        "logger": "host.mod",
    }
    assert rendered(logged) == {
        "event": text,
        "level": "error",
        "logger": WORK,
        "plugin_id": "raiser",
    }
    stamped = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.processors.TimeStamper(fmt="iso")],
        processors=[structlog.processors.JSONRenderer()],
    )
    assert "timestamp" in json.loads(stamped.format(logged))
    shown = shown_by(pythonjsonlogger.JsonFormatter("%(levelname)s %(name)s %(message)s"), logged)
    assert (shown["levelname"], shown["name"], shown["order"]) == ("ERROR", WORK, 7)
    assert (shown["plugin_id"], shown["extra_plugin_id"]) == ("raiser", "bank")
    structured = rendered(event)
    assert (structured["event"], structured["attempt"]) == ("structured failure", 2)
    assert structured["plugin_id"] == "raiser" and structured["logger"] == STRUCTURED
    # structlog's own event: foreign_pre_chain skipped, as in the plugin's process.
    assert "level" not in structured


async def test_rebuilt_frames_show_no_variables_of_isoplugs(tmp_path: Path) -> None:
    """The plugin's locals are not sent: a rebuilt frame has none, and its globals hold no
    name of isoplug's, for every tool that shows them; source lines still print."""
    async with running(tmp_path, "raiser") as (host, waiter):
        printed = await host.call("raiser", "log_exception")
        record = await waiter.wait_for(WORK, "startup failed")
    assert record.exc_info is not None
    exc_type, exc, tb = record.exc_info
    assert exc_type is not None and exc is not None and tb is not None
    summaries = traceback.TracebackException(exc_type, exc, tb, capture_locals=True).stack
    assert summaries and all(summary.locals is None for summary in summaries)
    frames = [frame for frame, _ in traceback.walk_tb(tb)]
    assert all(frame.f_locals == {} for frame in frames)
    assert all(set(frame.f_globals) == {"__builtins__"} for frame in frames)
    trace = structlog.tracebacks.extract(exc_type, exc, tb, show_locals=True)
    assert all(not frame.locals for stack in trace.stacks for frame in stack.frames)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(Traceback.from_exception(exc_type, exc, tb, show_locals=True))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "_g" not in shown and "isoplug_guard" not in shown and "__builtins__" not in shown
    assert "return int(settings" in shown
    assert logging.Formatter().formatException(record.exc_info) == as_host_prints(
        printed.rstrip("\n")
    )


def _describe(exc: BaseException) -> tuple[bool, bool, list[str], str]:
    """In another process: what a reporter there sees of a replayed exception."""
    return (
        isinstance(exc, ValueError),
        isinstance(exc, Exception),
        traceback.format_exception_only(exc),
        type(exc).__qualname__,
    )


def _serve(
    requests: multiprocessing.Queue[BaseException], answers: multiprocessing.Queue[object]
) -> None:
    answers.put(_describe(requests.get()))


async def test_a_replayed_exception_pickles_and_crosses_a_multiprocessing_queue(
    tmp_path: Path,
) -> None:
    """A host handler shipping ``exc_info[1]`` to another process (an error reporter): it
    pickles, and arrives an equivalent stand-in: the builtin's subclass, the same text."""
    async with running(tmp_path, "raiser") as (host, waiter):
        last_line = await host.call("raiser", "log_builtin")
        printed = await host.call("raiser", "log_exception")
        builtin = await waiter.wait_for(WORK, "parsing failed")
        chained = await waiter.wait_for(WORK, "startup failed")
    assert builtin.exc_info is not None and chained.exc_info is not None
    value_error, plugin_error = builtin.exc_info[1], chained.exc_info[1]
    assert value_error is not None and plugin_error is not None
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(value_error, protocol))
        assert isinstance(again, ValueError) and type(again) is type(value_error)
        assert traceback.format_exception_only(again)[-1] == last_line
        other = pickle.loads(pickle.dumps(plugin_error, protocol))
        assert str(other) == "bad configuration" and type(other) is type(plugin_error)
    # Pickling changes nothing of the record's own exception.
    assert logging.Formatter().formatException(chained.exc_info) == as_host_prints(
        printed.rstrip("\n")
    )
    context = multiprocessing.get_context("spawn")
    requests: multiprocessing.Queue[BaseException] = context.Queue()
    answers: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_serve, args=(requests, answers))
    child.start()
    try:
        requests.put(value_error)
        assert answers.get(timeout=60) == (True, True, [last_line], "ValueError")
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()


class _RecordMakingLogger(logging.Logger):
    """An application's logger class whose makeRecord marks what it made."""

    made: ClassVar[list[str]] = []

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = super().makeRecord(*args, **kwargs)
        record.made_by_logger_class = True
        self.made.append(record.getMessage())
        return record


@pytest.fixture
def logger_class() -> Iterator[type[_RecordMakingLogger]]:
    """``logging.setLoggerClass(_RecordMakingLogger)`` for the test."""
    before = logging.getLoggerClass()
    logging.setLoggerClass(_RecordMakingLogger)
    try:
        yield _RecordMakingLogger
    finally:
        logging.setLoggerClass(before)


async def test_a_logger_class_makes_the_records_of_its_plugin_loggers(
    tmp_path: Path, logger_class: type[_RecordMakingLogger]
) -> None:
    """With ``setLoggerClass``, a plugin's logger is of that class and its own makeRecord makes
    the plugin's records (the plugin's fields winning), as for the host's own records. The
    plugin's id is this test's alone: loggers stay in logging's registry for good."""
    directory = copy_plugins(tmp_path, "raiser")
    manifest = directory / "raiser" / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('id = "raiser"', 'id = "maker"'))
    name = "plugin.maker.raiser.work"
    with watching("plugin.maker") as waiter:
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(20)
            await host.call("maker", "log_builtin")
            record = await waiter.wait_for(name, "parsing failed")
    assert type(logging.getLogger(name)) is logger_class
    assert getattr(record, "made_by_logger_class", False) is True
    assert "parsing failed" in logger_class.made
    assert (record.__dict__["plugin_id"], record.__dict__["exc_type"]) == (
        "maker",
        "builtins.ValueError",
    )
