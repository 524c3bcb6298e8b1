"""A plugin that configures logging for itself (basicConfig, dictConfig, a console handler of
its own) still has every record, print and traceback arrive at the host, as itself, once."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from isoplug.runner.eventloop import EVENT_LOOP_VARIABLE
from isoplug.testing.records import Records
from tests.plugins_fixtures import running

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LIBRARY = "plugin.reconfigurer.thirdparty.lib"
CTX = "plugin.reconfigurer"


async def _marker(host: object, waiter: Records, tag: str) -> None:
    """Records of one runner arrive in order: once a later one is here, all before it are."""
    await host.call("reconfigurer", "log_everything", f"{tag}-marker")  # type: ignore[attr-defined]
    await waiter.wait_for(LIBRARY, f"{tag}-marker: failed")


def _only(waiter: Records, text: str) -> logging.LogRecord:
    """The one record whose message holds ``text``: none other, on any logger, holds it (a
    handler's formatting of it arriving as a line of text would)."""
    found = [r for r in waiter.records if text in r.getMessage()]
    assert len(found) == 1, [(r.name, r.getMessage()) for r in found]
    return found[0]


def _assert_everything_once(waiter: Records, tag: str) -> None:
    """What _log_everything(tag) logs arrived once each, as records of their own level and
    logger, and no handler's formatting of them arrived as text."""
    library = _only(waiter, f"{tag}: info of a library")
    assert (library.name, library.levelno) == (LIBRARY, logging.INFO)
    assert library.funcName == "_log_everything"
    failed = _only(waiter, f"{tag}: failed")
    assert (failed.name, failed.levelno) == (LIBRARY, logging.ERROR)
    assert failed.exc_info is not None and str(failed.exc_info[1]) == f"{tag}: boom"
    through_ctx = _only(waiter, f"{tag}: through ctx.logger")
    assert (through_ctx.name, through_ctx.levelno) == (CTX, logging.WARNING)
    assert _only(waiter, f"{tag}: printed").name == f"{CTX}.stdout"
    assert _only(waiter, f"{tag}: written to stderr").name == f"{CTX}.stderr"


async def test_basic_config_forced_keeps_every_record_arriving_as_itself(tmp_path: Path) -> None:
    """basicConfig(force=True) in a worker thread closes every root handler, isoplug's
    included: records logged right after it still arrive, with their levels and exception,
    and the plugin's console format never reaches the host as text."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "basic_config_forced")
        await waiter.wait_for("plugin.reconfigurer.isoplug.runner", "isoplug kept it")
        await _marker(host, waiter, "forced")
        _assert_everything_once(waiter, "forced")
        _assert_everything_once(waiter, "forced-marker")


async def test_dict_config_keeps_isoplugs_loggers_and_names_the_plugins_it_disabled(
    tmp_path: Path,
) -> None:
    """dictConfig() on the event loop, with a console handler and the default
    disable_existing_loggers: ctx.logger, the print streams and the log handler are isoplug's
    and keep working from the plugin's next line on; the plugin's own module logger, which
    the configuration disabled, is named in a WARNING with the fix."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "dict_config")
        warning = await waiter.wait_for(
            "plugin.reconfigurer.isoplug.runner", "disabled the logger(s)"
        )
        await _marker(host, waiter, "dict")
        _assert_everything_once(waiter, "dict")
    assert warning.levelno == logging.WARNING
    assert "reconfigurer_plugin" in warning.getMessage()
    # Enabled again, as isoplug's: its own loggers, and the warnings' (which still arrive).
    named = warning.getMessage().partition("logger(s) ")[2].partition(", so")[0].split(", ")
    assert "isoplug" not in named and "py.warnings" not in named
    assert "disable_existing_loggers=False" in warning.getMessage()
    assert not waiter.matching("plugin.reconfigurer.reconfigurer_plugin")
    # The runner ended as usual: its log connection said goodbye, nothing was lost.
    assert not [m for m in waiter.messages() if "without a goodbye" in m or "lost" in m]


async def test_a_console_handler_added_beside_isoplugs_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    """A StreamHandler the plugin adds to the root logger writes each record to stderr; the
    record itself arrives once, not also as a stderr line."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "console_added")
        await _marker(host, waiter, "added")
        _assert_everything_once(waiter, "added")


async def test_a_handler_drawing_through_helpers_sends_records_not_drawings(
    tmp_path: Path,
) -> None:
    """A handler that writes each record through helper calls (as rich's RichHandler does) is
    recognized as rendering it: the record arrives once, the drawing not at all; the report
    of that handler failing (handleError's traceback on stderr) still arrives as text."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "boxed_added")
        report = await waiter.wait_for(f"{CTX}.stderr", "--- Logging error ---")
        await _marker(host, waiter, "boxed")
        _assert_everything_once(waiter, "boxed")
    assert not [m for m in waiter.messages() if "+--------+" in m or m.startswith("| ")]
    broke = _only(waiter, "RuntimeError: the box handler broke")
    assert broke.name == report.name == f"{CTX}.stderr"
    assert broke.filename == "reconfigurer_plugin.py"  # where handleError was called


async def test_a_file_only_configuration_writes_its_file_and_the_host_still_gets_records(
    tmp_path: Path,
) -> None:
    """basicConfig(filename=..., force=True): the plugin's file gets its records, and once
    isoplug has put its handler back (it says so), so does the host."""
    log_file = tmp_path / "plugin.log"
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "file_only", str(log_file))
        await waiter.wait_for("plugin.reconfigurer.isoplug.runner", "isoplug kept it")
        await _marker(host, waiter, "file")
        _assert_everything_once(waiter, "file-marker")
        contents = await host.call("reconfigurer", "file_contents", str(log_file))
    assert "INFO:thirdparty.lib:file-marker: info of a library" in contents
    assert "ERROR:thirdparty.lib:file-marker: failed" in contents


async def test_logging_disable_silences_logging_calls_only(tmp_path: Path) -> None:
    """logging.disable(CRITICAL) in a plugin silences its logging calls, as in any program;
    its prints, stderr writes, warnings and uncaught exceptions, which a program of its own
    would show whatever logging.disable() says, still arrive."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "logging_disabled")
        await waiter.wait_for(f"{CTX}.stdout", "disabled: printed")
        await waiter.wait_for(f"{CTX}.stderr", "disabled: written to stderr")
        await waiter.wait_for(f"{CTX}.py.warnings", "disabled: a warning")
        failed = await waiter.wait_for(CTX, "Exception in thread failing")
        await _marker(host, waiter, "after-disable")
    assert failed.exc_info is not None
    assert str(failed.exc_info[1]) == "disabled: uncaught in a thread"
    assert not waiter.matching(LIBRARY, "disabled: a logging call")


async def test_the_plugins_root_level_is_its_logging_and_the_hosts_level_its_output(
    tmp_path: Path,
) -> None:
    """basicConfig(level=ERROR) in a plugin silences its logging below ERROR, not its prints,
    stderr writes and warnings, which a program of its own shows whatever logging's levels;
    the level the host sets for the plugin still applies to them."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "root_level_raised")
        await host.call("reconfigurer", "output", "raised")
        await waiter.wait_for(f"{CTX}.stdout", "raised: printed")
        await waiter.wait_for(f"{CTX}.stderr", "raised: written to stderr")
        await waiter.wait_for(f"{CTX}.py.warnings", "raised: a warning")
        await host.set_log_level("reconfigurer", "WARNING")
        await host.call("reconfigurer", "output", "host-level")
        await waiter.wait_for(f"{CTX}.py.warnings", "host-level: a warning")
        await _marker(host, waiter, "after-levels")
    assert not waiter.matching(LIBRARY, "raised: a warning logged")  # its own ERROR level
    assert not waiter.matching(f"{CTX}.stdout", "host-level: printed")  # INFO < WARNING
    assert waiter.matching(f"{CTX}.stderr", "host-level: written to stderr")


@pytest.mark.parametrize(
    ("how", "loop"),
    [
        ("setLevel", "asyncio"),
        ("basicConfig", "asyncio"),
        pytest.param(
            "setLevel", "uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="no uvloop")
        ),
    ],
)
async def test_crash_reports_arrive_whatever_the_plugins_root_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, loop: str
) -> None:
    """A plugin raising its root level to CRITICAL silences its logging calls below it, not
    its crash reports, which a program of its own prints whatever logging's levels: an
    uncaught exception in a thread, one raised in a __del__, a task's never retrieved (which
    plain asyncio logs on its logger: a raised root level hides it there). The level the host
    gives the plugin still applies to them, as to a stderr line."""
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "root_level_critical", how)
        await host.call("reconfigurer", "crash_reports", "raised")
        await waiter.wait_for(LIBRARY, "raised: marker")
        reports = {
            str(r.exc_info[1]): r
            for r in waiter.records
            if r.exc_info is not None and r.exc_info[1] is not None
        }
        for text in ("uncaught in a thread", "raised in __del__", "never retrieved"):
            record = reports.get(f"raised: {text}")
            assert record is not None, (text, waiter.messages())
            assert (record.name, record.levelno) == (CTX, logging.ERROR), record
        await host.set_log_level("reconfigurer", "CRITICAL")
        await host.call("reconfigurer", "crash_reports", "host-level")
        await waiter.wait_for(LIBRARY, "host-level: marker")
    assert not [r for r in waiter.records if "host-level: " in str(r.exc_info and r.exc_info[1])]


async def test_what_a_plugins_own_stdout_wrapper_holds_arrives_at_its_stop(
    tmp_path: Path,
) -> None:
    """A TextIOWrapper the plugin put over sys.stdout.buffer holds its lines (it is not line
    buffered); at the runner's stop they arrive as the plugin's stdout lines, before its log
    handler closes (they came as stderr text of the runner after it, at WARNING)."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "stdout_rewrapped")
    first = _only(waiter, "rewrapped: first line")
    second = _only(waiter, "rewrapped: second line")
    assert first.name == second.name == f"{CTX}.stdout"
    assert first.levelno == second.levelno == logging.INFO
    assert first.getMessage() == "rewrapped: first line"


@pytest.mark.parametrize("keep_isoplugs", [False, True])
async def test_a_loguru_sink_of_the_plugins_own_sends_records_not_text(
    tmp_path: Path, keep_isoplugs: bool
) -> None:
    """logger.remove(); logger.add(sys.stderr, format=...): loguru's records still arrive at
    their level, with their extras and exception, once, and not as stderr text; also when
    isoplug's own loguru sink is still there beside the plugin's."""
    tag = "kept" if keep_isoplugs else "own"
    module = f"{CTX}.reconfigurer_plugin"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "loguru_own_sink", keep_isoplugs)
        await waiter.wait_for(module, f"{tag}: loguru failed")
        await _marker(host, waiter, f"loguru-{tag}")
    success = _only(waiter, f"{tag}: loguru success")
    assert (success.name, success.levelname, success.levelno) == (module, "SUCCESS", 25)
    assert success.user == "ann"  # type: ignore[attr-defined]
    failed = _only(waiter, f"{tag}: loguru failed")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info is not None and str(failed.exc_info[1]) == f"{tag}: loguru boom"
    assert not [m for m in waiter.messages() if f"{tag}: loguru boom" in m]  # no text of it


@pytest.mark.parametrize("stamp", ["date", "clock", "none"])
async def test_structlog_as_it_comes_sends_its_events_as_records(
    tmp_path: Path, stamp: str
) -> None:
    """structlog's default configuration prints each event rendered (ConsoleRenderer, an
    exception as a drawn box): each arrives instead as the record it stands for, at its
    level, with its bound and given values as extras and its exception, once; whatever its
    lines start with (a date, a clock, the level in brackets), which would read as a level
    prefix as text."""
    module = f"{CTX}.reconfigurer_plugin"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "structlog_default", stamp)
        await waiter.wait_for(module, "sl: failed")
        await _marker(host, waiter, "structlog")
    info = _only(waiter, "sl: info")
    assert (info.name, info.levelno, info.funcName) == (module, logging.INFO, "structlog_default")
    assert (info.user, info.step) == ("ann", 1)  # type: ignore[attr-defined]
    error = _only(waiter, "sl: error")
    assert (error.levelno, error.code) == (logging.ERROR, 42)  # type: ignore[attr-defined]
    failed = _only(waiter, "sl: failed")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info is not None and str(failed.exc_info[1]) == "sl: boom"
    # No rendering, no drawn box: the marker's print is the one stdout line.
    assert [r.getMessage() for r in waiter.matching(f"{CTX}.stdout")] == [
        "structlog-marker: printed"
    ]


@pytest.mark.parametrize("bracketed", [False, True], ids=["plain", "level prefix"])
async def test_a_handler_that_prints_sends_records_not_lines(
    tmp_path: Path, bracketed: bool
) -> None:
    """A handler printing each record (print() in emit), on a logger isoplug's handler is
    not above: the record arrives, once, at its level; its printed line does not, even one
    that starts as a level prefix ("[WARNING] ...") would."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "printing_handler", bracketed)
        await waiter.wait_for(f"{CTX}.audit", "printed: audit info")
        await _marker(host, waiter, "printing")
    warning = _only(waiter, "printed: audit warning")
    assert (warning.name, warning.levelno) == (f"{CTX}.audit", logging.WARNING)
    assert not [m for m in waiter.messages() if "PRINTED" in m]


async def test_isoplugs_handler_taken_off_by_hand_is_put_back_and_said(tmp_path: Path) -> None:
    """Root handlers removed by hand (not closed) and a file configuration: within the
    runner's next look isoplug's handler is back beside the file's, a WARNING says what the
    meantime cost, and from then on every record reaches both."""
    log_file = tmp_path / "by-hand.log"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "handlers_removed_by_hand", str(log_file))
        warning = await waiter.wait_for(
            "plugin.reconfigurer.isoplug.runner", "took isoplug's log handler off"
        )
        await _marker(host, waiter, "by-hand")
        contents = await host.call("reconfigurer", "file_contents", str(log_file))
    assert warning.levelno == logging.WARNING
    _assert_everything_once(waiter, "by-hand-marker")
    assert "INFO:thirdparty.lib:by-hand-marker: info of a library" in contents


@pytest.mark.parametrize("plugin", ["reconfigurer", "piped"])
async def test_a_librarys_own_console_sends_each_record_once(tmp_path: Path, plugin: str) -> None:
    """A library that gives its logger a console handler of its own (at import, or later): each
    record arrives once, as itself, never also as the handler's text on stderr, in records
    mode and in pipe mode (where the runner puts its rendering stream under such handlers
    after the plugins' setup, and then within a second)."""
    async with running(tmp_path, plugin) as (host, waiter):
        seen = await host.call(plugin, "library_consoles", "lib", piped=plugin == "piped")
        await waiter.wait_for(f"plugin.{plugin}.thirdparty.later", "lib: from a console added")
        await host.stop(plugin)
    assert seen == (plugin == "piped")
    at_import = _only(waiter, "lib: from the library's console")
    later = _only(waiter, "lib: from a console added later")
    assert at_import.name == f"plugin.{plugin}.thirdparty.console"
    assert later.name == f"plugin.{plugin}.thirdparty.later"
    assert at_import.levelno == later.levelno == logging.WARNING


async def test_in_pipe_mode_a_console_handler_of_the_plugins_own_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    """With stdio = "pipe" a print() runs no Python, so the runner puts a rendering stream
    under the plugin's console handler (basicConfig(force=True) here): each record arrives
    once, as itself, not also as the handler's text on fd 2; prints arrive as fd lines."""
    piped = "plugin.piped"
    async with running(tmp_path, "piped") as (host, waiter):
        await host.call("piped", "basic_config_forced")
        await waiter.wait_for(f"{piped}.thirdparty.lib", "forced: failed")
        await host.call("piped", "log_everything", "piped-marker")
        await waiter.wait_for(f"{piped}.thirdparty.lib", "piped-marker: failed")
        await waiter.wait_for(f"{piped}.stderr", "piped-marker: written to stderr")
    for tag in ("forced", "piped-marker"):
        library = _only(waiter, f"{tag}: info of a library")
        assert (library.name, library.levelno) == (f"{piped}.thirdparty.lib", logging.INFO)
        failed = _only(waiter, f"{tag}: failed")
        assert failed.exc_info is not None and str(failed.exc_info[1]) == f"{tag}: boom"
        assert _only(waiter, f"{tag}: through ctx.logger").name == piped
        assert _only(waiter, f"{tag}: printed").name == f"{piped}.stdout"


@pytest.mark.parametrize("kind", ["rich", "drawing", "holding"])
async def test_in_pipe_mode_a_console_handler_of_no_stream_class_sends_each_record_once(
    tmp_path: Path, kind: str
) -> None:
    """With stdio = "pipe", a console handler that is no StreamHandler (rich's RichHandler,
    one writing to sys.stdout as it finds it then, one whose console holds sys.stderr):
    each record, isoplug's own included, arrives once, as itself, never also as the
    handler's text on the pipes."""
    if kind == "rich":
        pytest.importorskip("rich")
    piped = "plugin.piped_consoles"
    async with running(tmp_path, "piped_consoles") as (host, waiter):
        await host.call("piped_consoles", "configured", kind)
        await waiter.wait_for(f"{piped}.stdout", f"{kind}: the end of stdout")
        await waiter.wait_for(f"{piped}.stderr", f"{kind}: the end of stderr")
    warned = _only(waiter, f"{kind}: warned")
    assert (warned.name, warned.levelno) == (f"{piped}.app", logging.WARNING)
    failed = _only(waiter, f"{kind}: failed")
    assert (failed.name, failed.levelno) == (f"{piped}.app", logging.ERROR)
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], ZeroDivisionError)
    _only(waiter, "isoplug kept it on the root logger")
    printed = [r.getMessage() for r in waiter.records if r.name.startswith(f"{piped}.std")]
    assert sorted(printed) == [f"{kind}: the end of stderr", f"{kind}: the end of stdout"]
