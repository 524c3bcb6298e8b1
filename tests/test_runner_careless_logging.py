"""A plugin that reconfigures its logging carelessly (loguru's InterceptHandler, a handler that
fails, root handlers cleared, logging.shutdown() at any time, a multiprocessing child that
raises) never loops, never floods the host, and loses nothing without saying so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from isoplug.testing.records import Records
from tests.plugins_fixtures import running

CTX = "plugin.reconfigurer"
LIBRARY = f"{CTX}.thirdparty.lib"
ISOPLUG_RUNNER = f"{CTX}.isoplug.runner"


def _only(waiter: Records, text: str) -> logging.LogRecord:
    """The one record whose message holds ``text``: none other, on any logger, holds it."""
    found = [r for r in waiter.records if text in r.getMessage()]
    assert len(found) == 1, [(r.name, r.levelname, r.getMessage()) for r in found]
    return found[0]


def _assert_everything_once(waiter: Records, tag: str) -> None:
    """What the plugin's _log_everything(tag) logs arrived once each, as itself."""
    library = _only(waiter, f"{tag}: info of a library")
    assert (library.name, library.levelno) == (LIBRARY, logging.INFO)
    assert (Path(library.pathname).name, library.funcName) == (
        "reconfigurer_plugin.py",
        "_log_everything",
    )
    failed = _only(waiter, f"{tag}: failed")
    assert (failed.name, failed.levelno) == (LIBRARY, logging.ERROR)
    assert failed.exc_info is not None and str(failed.exc_info[1]) == f"{tag}: boom"
    assert _only(waiter, f"{tag}: through ctx.logger").name == CTX
    assert _only(waiter, f"{tag}: printed").name == f"{CTX}.stdout"
    assert _only(waiter, f"{tag}: written to stderr").name == f"{CTX}.stderr"


async def _marker(host: object, waiter: Records, tag: str) -> None:
    """Records of one runner arrive in order: once a later one is here, all before it are."""
    await host.call("reconfigurer", "log_everything", f"{tag}-marker")  # type: ignore[attr-defined]
    await waiter.wait_for(LIBRARY, f"{tag}-marker: failed")


def _no_loop_traces(waiter: Records) -> None:
    for message in waiter.messages():
        assert "RecursionError" not in message, message
        assert "Logging error in Loguru" not in message, message
        assert "(log handler closed)" not in message, message


@pytest.mark.parametrize(
    ("own_sink", "enqueue"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["isoplug's sink", "own sink", "isoplug's and an enqueued sink", "own enqueued sink"],
)
async def test_loguru_intercept_handler_sends_each_record_once(
    tmp_path: Path, own_sink: bool, enqueue: bool
) -> None:
    """loguru's README InterceptHandler as the root's handler (every record into loguru,
    which writes it, or hands it to isoplug's sink into logging): each record, print and
    direct loguru call arrives once, as itself; the call returns (it looped until it timed
    out, the host flooded with RecursionError reports). With a sink of ``enqueue=True``,
    whose text loguru's own thread writes, a logging record arrived twice: as itself, and
    as loguru's copy of it on the plugin's module logger."""
    pytest.importorskip("loguru")
    tag = ("own" if own_sink else "bridged") + ("-enqueued" if enqueue else "")
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "loguru_intercepted", tag, own_sink, enqueue)
        await _marker(host, waiter, tag)
        metrics = host.log_metrics("reconfigurer")
    _assert_everything_once(waiter, tag)
    _assert_everything_once(waiter, f"{tag}-marker")
    direct = _only(waiter, f"{tag}: loguru directly")
    assert (direct.name, direct.levelno) == (f"{CTX}.reconfigurer_plugin", logging.INFO)
    _no_loop_traces(waiter)
    assert not metrics.dropped
    # The configuration's own INFO, the two rounds of five, the direct call: a few dozen.
    assert metrics.received < 40, metrics


async def test_a_loguru_record_two_sinks_write_arrives_once(tmp_path: Path) -> None:
    """Two loguru sinks of the plugin's own (stderr and stdout, loguru's README) write each
    message: it arrives once, as its record (it came once per sink)."""
    pytest.importorskip("loguru")
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "loguru_two_sinks", "two")
        await _marker(host, waiter, "two")
    record = _only(waiter, "two: written by two sinks")
    assert (record.name, record.levelno) == (f"{CTX}.reconfigurer_plugin", logging.WARNING)
    assert record.user == "ann"  # type: ignore[attr-defined]


async def test_a_handler_feeding_loguru_from_afar_meets_its_own_record_once(
    tmp_path: Path,
) -> None:
    """A handler whose loguru call is too many calls below its emit() to be told apart from
    any loguru call: the record isoplug's loguru sink makes of it reaches that handler again
    once, and what it then logs through loguru goes to stderr as plain text, counted in a
    WARNING of isoplug's; nothing loops."""
    pytest.importorskip("loguru")
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "loguru_intercepted_far", "far")
        report = await waiter.wait_for(f"{CTX}.isoplug.logs", "as plain text")
        await waiter.wait_for(f"{CTX}.stderr", "far: far intercepted")
        await _marker(host, waiter, "far")
    assert report.levelno == logging.WARNING
    assert "loguru" in report.getMessage()
    # The record itself, loguru's copy of it (the handler gave it to loguru), and that copy's
    # own trip through the handler, as text: three, and no more.
    arrived = [r for r in waiter.records if "far: far intercepted" in r.getMessage()]
    assert sorted(r.name for r in arrived) == sorted(
        [LIBRARY, f"{CTX}.reconfigurer_plugin", f"{CTX}.stderr"]
    ), [(r.name, r.getMessage()) for r in arrived]
    _no_loop_traces(waiter)


async def test_a_failing_handlers_report_arrives_once(tmp_path: Path) -> None:
    """A console handler whose formatter raises: one record logged through it gives one
    '--- Logging error ---' report, as plain Python prints (each line of the report went
    through the failing handler again: hundreds of records for one)."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "failing_console", "broken")
        await waiter.wait_for(f"{CTX}.stderr", "Arguments: ('broken',)")
        await _marker(host, waiter, "broken")
    assert _only(waiter, "broken: through a broken console").name == LIBRARY
    report = [r for r in waiter.records if r.getMessage() == "--- Logging error ---"]
    assert len(report) == 1, len(report)
    broke = _only(waiter, "RuntimeError: the formatter broke")
    assert broke.exc_info is not None and broke.name == f"{CTX}.stderr"
    assert _only(waiter, "Message: '%s: through a broken console'").name == f"{CTX}.stderr"
    assert len(waiter.select(plugin="reconfigurer", stream="stderr", text="Message: ")) == 1


@pytest.mark.parametrize("last_resort", [True, False], ids=["last resort", "no last resort"])
async def test_root_handlers_cleared_lose_no_print_and_the_warning_says_what_was_lost(
    tmp_path: Path, last_resort: bool
) -> None:
    """root.handlers.clear() (with logging.lastResort = None too): prints, stderr writes,
    warnings and uncaught exceptions still arrive, as in a program of its own, whose logging
    never touches them (they were lost, uncounted); the runner's WARNING says what became
    of the plugin's logging calls meanwhile, truly."""
    tag = "cleared"
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "handlers_cleared", tag, last_resort)
        warning = await waiter.wait_for(ISOPLUG_RUNNER, "took isoplug's log handler off")
        await _marker(host, waiter, tag)
    assert _only(waiter, f"{tag}: printed").name == f"{CTX}.stdout"
    assert _only(waiter, f"{tag}: written to stderr").name == f"{CTX}.stderr"
    assert _only(waiter, f"{tag}: a warning").name == f"{CTX}.py.warnings"
    uncaught = _only(waiter, "Exception in thread failing")
    assert uncaught.exc_info is not None and str(uncaught.exc_info[1]) == f"{tag}: uncaught"
    assert not [m for m in waiter.messages() if "No handlers could be found" in m]
    said = warning.getMessage()
    assert "prints, stderr writes, warnings and uncaught exceptions arrived" in said
    if last_resort:
        assert "last resort: those at WARNING and above arrived" in said
    else:
        assert "are lost" in said and "logging.lastResort is None" in said
    assert "passed on its WARNING" not in said


async def test_logging_shutdown_outside_exit_keeps_forwarding(tmp_path: Path) -> None:
    """logging.shutdown() called by plugin code at any time: isoplug's handler stays open,
    an INFO says where it was called, and later records, prints and crashes still arrive as
    themselves (they came as the handler's stderr fallback text, at WARNING, for the
    runner's whole life)."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "logging_shut_down")
        said = await waiter.wait_for(ISOPLUG_RUNNER, "logging.shutdown()")
        await host.call("reconfigurer", "log_everything", "after")
        await _marker(host, waiter, "after")
    assert said.levelno == logging.INFO
    assert "reconfigurer_plugin.py" in said.getMessage()
    _assert_everything_once(waiter, "after")
    _no_loop_traces(waiter)


async def test_a_multiprocessing_childs_traceback_arrives_once_as_its_own(
    tmp_path: Path,
) -> None:
    """A multiprocessing child (fork) whose target raises: multiprocessing prints the
    traceback after the child's exit finalizers ran; it arrives once, an ERROR record of the
    child's pid with its exception (it came twice, as fallback text and read from fd 2, both
    the runner's)."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        child = await host.call("reconfigurer", "failing_child", "child")
        runner = await host.call("reconfigurer", "pid")
        crash = await waiter.wait_for(f"{CTX}.stderr", "RuntimeError: child: uncaught")
        await _marker(host, waiter, "child")
    assert child != runner
    assert _only(waiter, "child: logged").process == child
    assert _only(waiter, "RuntimeError: child: uncaught") is crash
    assert crash.levelno == logging.ERROR and crash.process == child
    assert crash.exc_info is not None and str(crash.exc_info[1]) == "child: uncaught"
    assert _only(waiter, "Process ForkProcess").process == child
    _no_loop_traces(waiter)


async def test_a_configuration_report_waited_for_arrives_before_the_exit_hooks(
    tmp_path: Path,
) -> None:
    """The record saying a configuration closed isoplug's handler comes from a thread that
    waits for logging's lock (or for the CPU, on a loaded machine): when the runner stops
    meanwhile, it is waited for before the exit hooks, whose end closes the forwarding
    handler. It came after them, as stderr text."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "configured_holding_logging", 0.3)
    said = _only(waiter, "the plugin's logging configuration closed isoplug's log handler")
    assert said.name == ISOPLUG_RUNNER


@pytest.mark.parametrize("enqueue", [False, True], ids=["console sink", "enqueued console sink"])
async def test_a_console_sink_added_after_isoplug_put_its_own_back_writes_each_message_once(
    tmp_path: Path, enqueue: bool
) -> None:
    """A plugin removes every loguru sink, isoplug puts its own back (a look of its found
    none), and then the plugin adds its console sink: each loguru message arrives once."""
    pytest.importorskip("loguru")
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "loguru_removed")
        await waiter.wait_for(ISOPLUG_RUNNER, "isoplug added it back")
        await host.call("reconfigurer", "loguru_own_sink_added", "late", enqueue)
        await _marker(host, waiter, "late")
    direct = _only(waiter, "late: loguru directly")
    assert (direct.name, direct.levelno) == (f"{CTX}.reconfigurer_plugin", logging.INFO)


async def test_a_plugin_using_loguru_stops_without_a_word_of_its_sinks(tmp_path: Path) -> None:
    """loguru's own exit hook removes every sink, isoplug's too, at every exit: the runner's
    end drains the queued sinks but says nothing of a sink removed then."""
    pytest.importorskip("loguru")
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "loguru_two_sinks", "two")
        await _marker(host, waiter, "two")
        await host.stop("reconfigurer")
    said = [m for m in waiter.messages() if "loguru sink" in m]
    assert not said, said
