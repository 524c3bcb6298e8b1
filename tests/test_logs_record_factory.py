"""Replayed records go through the application's ``logging.setLogRecordFactory()``, as the
stdlib's ``logging.makeLogRecord`` does: a formatter that reads an attribute the factory adds
formats every plugin record, and every record a standalone ``LogReceiver`` replays. The
sender's fields win over what the factory computed for the host's replay thread; a factory
that raises costs no record and is said once."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter, eventually, watching
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving, run_child

#: What the application's factory puts on every record it makes, and the format reading it.
HOSTNAME = "web-1"
FORMAT = "%(hostname)s %(request_id)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def record_factory(
    stamp: Callable[[logging.LogRecord, tuple[Any, ...]], None],
) -> Iterator[Callable[..., logging.LogRecord]]:
    """During the block, this process's record factory makes records with the one before it,
    then hands each to ``stamp`` with the arguments it was called with."""
    before = logging.getLogRecordFactory()

    def application_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = before(*args, **kwargs)
        stamp(record, args)
        return record

    logging.setLogRecordFactory(application_factory)
    try:
        yield application_factory
    finally:
        logging.setLogRecordFactory(before)


def web_stamp(record: logging.LogRecord, args: tuple[Any, ...]) -> None:
    """An application's factory: a host name and a request id on every record (and, for the
    test, what it was called with; a ``user`` the plugin's extra must win over)."""
    record.hostname = HOSTNAME
    record.request_id = "-"
    record.user = "the factory's"
    record.made_with = args


def stamped_plugin_records(waiter: RecordWaiter) -> list[logging.LogRecord]:
    return [r for r in waiter.records if r.name.startswith("plugin.") and hasattr(r, "n")]


async def test_a_plugins_records_are_made_by_the_hosts_record_factory(tmp_path: Path) -> None:
    """Every replayed record has the attributes the host's factory adds, and formats with a
    format that reads them (it used to fail on every one: "Formatting field not found in
    record"); the factory was called with the record's standard arguments; the plugin's
    fields (its extra ``user``, its process, thread and source) win over what the factory
    computed for the host's thread; the host's identity stays."""
    with record_factory(web_stamp), watching("isoplug.host") as host_records:
        async with running(tmp_path, "chronicler") as (host, waiter):
            pid = await host.call("chronicler", "pid")
            await host.call("chronicler", "log_numbered", count=3)
            await waiter.wait_until(lambda: len(stamped_plugin_records(waiter)) == 3)
            metrics = host.log_metrics("chronicler")
    records = stamped_plugin_records(waiter)
    assert [r.n for r in records] == [0, 1, 2]  # type: ignore[attr-defined]
    formatter = logging.Formatter(FORMAT)
    assert [formatter.format(r) for r in records] == [
        f"web-1 - INFO plugin.chronicler.chronicler.work: record {n}" for n in range(3)
    ]
    for record in records:
        assert record.made_with == (  # type: ignore[attr-defined]
            record.name,
            record.levelno,
            record.pathname,
            record.lineno,
            record.msg,
            record.args,
            record.exc_info,
            record.funcName,
            record.stack_info,
        )
        assert record.user == "ann"  # type: ignore[attr-defined]
        assert record.process == pid and record.threadName == "MainThread"
        assert record.filename == "chronicler_plugin.py" and record.funcName == "log_numbered"
        assert record.plugin_id == "chronicler" and record.runner_pid == pid  # type: ignore[attr-defined]
    assert metrics.record_factory_errors == 0
    assert not host_records.matching("isoplug.host", "record factory")


@BOTH_MODES
async def test_a_receivers_records_are_made_by_the_record_factory(mode: str) -> None:
    """The same for a standalone LogReceiver, on a loop and in its own threads: each record a
    child forwards has the factory's attributes and formats, with the child's own fields."""
    with record_factory(web_stamp):
        async with receiving(mode) as (receiver, collector):
            child = await run_child(receiver, "clean-exit", "3")
            code, stderr = await finish(child)
            assert code == 0, stderr
            await collector.wait_until(lambda: len(collector.numbers()) == 3)
    records = [r for r in collector.records if hasattr(r, "n")]
    formatter = logging.Formatter(FORMAT)
    assert [formatter.format(r) for r in records] == [
        f"web-1 - INFO kids.child.work: record {n}" for n in range(3)
    ]
    assert all(r.process == child.pid and r.made_with[0] == r.name for r in records)  # type: ignore[attr-defined]


def request_context_stamp(record: logging.LogRecord, args: tuple[Any, ...]) -> None:
    """A factory that reads a request context only the application's own threads have: it
    raises outside them, as a web framework's request proxy does."""
    if str(args[0]).startswith(("plugin.", "kids.")):
        raise RuntimeError("working outside of request context")
    record.hostname = HOSTNAME


async def test_a_record_factory_that_raises_costs_no_plugin_record(tmp_path: Path) -> None:
    """Each record the factory raises on is delivered all the same (made without it), counted
    in record_factory_errors; the failure is said once on isoplug.host, with what to do and
    the factory's traceback, however many records it fails on."""
    with record_factory(request_context_stamp), watching("isoplug.host") as host_records:
        async with running(tmp_path, "chronicler") as (host, waiter):
            await host.call("chronicler", "log_numbered", count=3)
            await waiter.wait_until(lambda: len(stamped_plugin_records(waiter)) == 3)
            await host.call("chronicler", "log_numbered", count=3)
            await waiter.wait_until(lambda: len(stamped_plugin_records(waiter)) == 6)
            metrics = host.log_metrics("chronicler")
    records = stamped_plugin_records(waiter)
    assert [r.n for r in records] == [0, 1, 2, 0, 1, 2]  # type: ignore[attr-defined]
    assert not any(hasattr(r, "hostname") for r in records)
    assert metrics.record_factory_errors >= 6
    (said,) = host_records.matching("isoplug.host", "record factory")
    assert said.getMessage().startswith(
        "the log record factory record_factory.<locals>.application_factory "
        "(logging.setLogRecordFactory) failed making a record of plugin chronicler "
        "(RuntimeError: working outside of request context); it was made without the factory"
    )
    assert "needs a default for when there is none" in said.getMessage()
    assert said.exc_text is not None and "request_context_stamp" in said.exc_text
    # Made by the factory, which serves the host's own logger.
    assert said.hostname == HOSTNAME  # type: ignore[attr-defined]


@contextlib.contextmanager
def returning_none_for(prefix: str) -> Iterator[None]:
    """A factory that returns None for records under ``prefix``."""
    before = logging.getLogRecordFactory()

    def forgetful_factory(*args: Any, **kwargs: Any) -> Any:
        return None if str(args[0]).startswith(prefix) else before(*args, **kwargs)

    logging.setLogRecordFactory(forgetful_factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(before)


async def test_a_record_factory_that_makes_no_record_costs_no_received_record() -> None:
    """A receiver's factory that returns None: each record arrives all the same, and so does
    the receiver's own report about the sender (its logger found disabled), each counted;
    the failure is said once on isoplug.logs, naming what the factory returned."""
    logging.getLogger("kids.child.work").disabled = True  # as a dictConfig() would leave it
    with returning_none_for("kids"), watching("isoplug.logs") as receiver_records:
        async with receiving("threads") as (receiver, collector):
            child = await run_child(receiver, "clean-exit", "3")
            code, stderr = await finish(child)
            assert code == 0, stderr
            await collector.wait_until(lambda: len(collector.numbers()) == 3)
            await eventually(
                lambda: sum(m.record_factory_errors for m in receiver.metrics().values()) == 4
            )
    (enabled_again,) = collector.matching("kids", "had been disabled")
    assert enabled_again.isoplug_report  # type: ignore[attr-defined]
    (said,) = receiver_records.matching("isoplug.logs", "record factory")
    assert "(TypeError: it returned NoneType, not a logging.LogRecord" in said.getMessage()
