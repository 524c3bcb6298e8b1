"""``isoplug run --tui``: the dashboard, driven headless by Textual's own harness
(``App.run_test``) with real runner processes behind it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("textual")

import shutil

from textual.pilot import Pilot
from textual.widgets import DataTable

from isoplug import Host
from isoplug.errors import IsoplugError
from isoplug.testing import attached, eventually
from isoplug.tui import PluginDashboard, feeding
from isoplug.tui import app as tui_app
from isoplug.tui.log_feed import LogEntry, LogFeed, LogFilter
from isoplug.tui.log_pane import RERENDER_LINES, LogPane
from isoplug.tui.process_stats import ProcessSampler
from isoplug.tui.rows import COLUMNS
from tests.plugins_fixtures import FAST, copy_plugins, plugins_dir

SIZE = (200, 50)


@asynccontextmanager
async def dashboard(
    tmp_path: Path, *names: str
) -> AsyncIterator[tuple[Host, PluginDashboard, Pilot[None]]]:
    """The dashboard over a host of ``names``, refreshing its table ten times a second and
    showing new lines at each look: these tests wait for what it shows, not for its pace
    (which test_lines_that_keep_coming_are_shown_less_often tests)."""
    with attached(LogFeed()) as feed, mock.patch.object(tui_app, "TABLE_INTERVAL", 0.1):
        async with Host(plugins_dir(tmp_path, *names), config=FAST) as host:
            await host.wait_ready(20)
            app = PluginDashboard(host, feed)
            app.busy_log_interval = 0.0
            async with app.run_test(size=SIZE) as pilot:
                yield host, app, pilot


def cell(app: PluginDashboard, plugin: str, column: str) -> str:
    return str(app.query_one(DataTable).get_cell(plugin, column))


async def select(app: PluginDashboard, plugin: str) -> None:
    table: DataTable[str] = app.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(plugin))
    await eventually(lambda: app.selected_plugin() == plugin)


def shown(app: PluginDashboard, text: str) -> bool:
    return any(text in line for line in app.pane_lines())


async def test_shows_a_crash_and_restarts_the_selected_plugin_on_r(tmp_path: Path) -> None:
    async with dashboard(tmp_path, "echo", "leveled") as (host, app, pilot):
        await eventually(lambda: cell(app, "echo", "state") == "ready")
        first_pid = host.plugin("echo").pid
        other_pid = host.plugin("leveled").pid
        assert cell(app, "echo", "pid") == str(first_pid)
        with pytest.raises(IsoplugError):
            await host.call("echo", "crash", 7)
        # The crash: its account in the table, its last words and the host's account in the pane.
        await eventually(lambda: cell(app, "echo", "last_exit") == "code 7")
        await eventually(lambda: shown(app, "echo: crashing now"))
        await eventually(lambda: shown(app, "exited with code 7"))
        await eventually(lambda: cell(app, "echo", "state") == "ready")
        assert cell(app, "echo", "restarts") == "1"
        restarted_pid = host.plugin("echo").pid
        await eventually(lambda: cell(app, "echo", "pid") == str(restarted_pid))

        await select(app, "echo")
        await pilot.press("r")
        await eventually(lambda: host.plugin("echo").pid not in (None, restarted_pid))
        await eventually(
            lambda: (
                cell(app, "echo", "pid") == str(host.plugin("echo").pid)
                and cell(app, "echo", "state") == "ready"
            )
        )
        # Only the selected plugin was restarted.
        assert host.plugin("leveled").pid == other_pid
        # The row's process figures are read from the live runner.
        await eventually(lambda: cell(app, "echo", "rss").endswith("MiB"))
        await eventually(lambda: cell(app, "echo", "cpu").endswith("%"))


def table_text(app: PluginDashboard) -> list[str]:
    """The table's lines as drawn on screen."""
    table: DataTable[str] = app.query_one(DataTable)
    return [table.render_line(y).text for y in range(table.size.height)]


async def test_table_cells_show_their_whole_values_when_they_grow(tmp_path: Path) -> None:
    with attached(LogFeed()) as feed:
        async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
            await host.wait_ready(20)
            await host.stop("echo")
            app = PluginDashboard(host, feed)
            async with app.run_test(size=SIZE) as pilot:
                # The first row holds dashes: no pid, no uptime, no process figures.
                await eventually(lambda: cell(app, "echo", "state") == "stopped")
                assert cell(app, "echo", "pid") == "-"
                await host.restart("echo")
                pid = str(host.plugin("echo").pid)
                await eventually(lambda: cell(app, "echo", "pid") == pid)
                await eventually(lambda: cell(app, "echo", "rss").endswith("MiB"))
                await pilot.pause()
                row = next(line for line in table_text(app) if " echo " in line)
                for key, _, _ in COLUMNS:
                    assert cell(app, "echo", key) in row, (key, row)


async def test_the_events_a_plugin_dropped_have_a_column(tmp_path: Path) -> None:
    """Beside the log records the host dropped: the events the plugin dropped, its queue
    full (``PluginInfo.events_dropped``)."""
    async with dashboard(tmp_path, "backlogged") as (host, app, _):
        await eventually(lambda: cell(app, "backlogged", "events_dropped") == "0")
        for n in range(1100):  # one handled (it never ends), 1024 waiting, the rest dropped
            await host.publish("tick", n)
        await eventually(lambda: host.plugin("backlogged").events_dropped == 1100 - 1 - 1024)
        await eventually(lambda: cell(app, "backlogged", "events_dropped") == str(1100 - 1 - 1024))
        assert cell(app, "backlogged", "drops") == "0"  # the log's own: none


async def test_level_key_starts_from_the_level_the_plugin_runs_at(tmp_path: Path) -> None:
    # printer's manifest says log_level = "DEBUG": the first `l` goes to INFO, not WARNING.
    async with dashboard(tmp_path, "printer") as (host, app, pilot):
        await eventually(lambda: cell(app, "printer", "level") == "DEBUG")
        await select(app, "printer")
        await pilot.press("l")
        await eventually(lambda: shown(app, "printer now logs at INFO"))
        assert host.log_level("printer") == logging.INFO
        await eventually(lambda: cell(app, "printer", "level") == "INFO")
        await pilot.press("l")
        await eventually(lambda: shown(app, "printer now logs at WARNING"))
        assert host.log_level("printer") == logging.WARNING


class FloodLines(logging.Handler):
    """The ``flood <n>`` lines handed to the host's logging: how many, and the highest n."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.highest = -1

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("flood "):
            self.count += 1
            self.highest = max(self.highest, int(message[6:]))


async def flood(host: Host, count: int) -> str:
    """``printer`` prints ``count`` lines; wait until each was handed to the host's logging or
    counted dropped (on a loaded machine the runner's full queue drops the newest); the last
    that was handed over.

    Counted by a handler, not by the metrics' ``received``: that counts a batch's records
    once it is decoded, before they are replayed one by one on the connection's thread, so
    the line taken for the last could be one of hundreds still on their way, and a pane that
    shows a look's newest lines only would never show it."""
    before = host.log_metrics("printer")
    lines = FloodLines()
    # On the plugin's stdout logger: its handlers run before the root's (the feed's).
    logger = logging.getLogger("plugin.printer.stdout")
    logger.addHandler(lines)
    try:
        await host.call("printer", "flood", count)

        def accounted() -> bool:
            now = host.log_metrics("printer")
            dropped = sum(now.dropped.values()) - sum(before.dropped.values())
            return lines.count + now.filtered - before.filtered + dropped >= count

        await eventually(accounted)
    finally:
        logger.removeHandler(lines)
    return f"flood {lines.highest}"


@pytest.mark.slow
async def test_a_flooding_plugin_gets_a_bounded_share_of_each_refresh(tmp_path: Path) -> None:
    with attached(LogFeed()) as feed:
        async with Host(plugins_dir(tmp_path, "printer"), config=FAST) as host:
            await host.wait_ready(20)
            # Before the view opens: more lines than the feed keeps, all new to the pane.
            last = await flood(host, 20_000)
            app = PluginDashboard(host, feed)
            async with app.run_test(size=SIZE) as pilot:
                pane = app.query_one(LogPane)
                bound = pane.lines_per_refresh()
                await eventually(lambda: shown(app, last))
                assert shown(app, "lines skipped")
                assert shown(app, "more gone from the buffer")
                # One refresh's worth, not the 5,000 kept records (plus the host's few lines).
                assert len(app.pane_lines()) <= bound + 20
                # A flood while the view runs: no refresh renders more than the bound.
                last = await flood(host, 30_000)
                await eventually(lambda: shown(app, last))
                assert pane.recent_writes and max(pane.recent_writes) <= bound
                # A re-render (a filter changed) is bounded too.
                await pilot.press("v")
                assert app.filter.level == logging.INFO
                assert len(app.pane_lines()) <= RERENDER_LINES + 5


async def test_lines_that_keep_coming_are_shown_less_often(tmp_path: Path) -> None:
    async with dashboard(tmp_path, "echo") as (_, app, _):
        await eventually(lambda: cell(app, "echo", "state") == "ready")
        app.busy_log_interval = 3600.0  # "still busy" for as long as the test runs
        logger = logging.getLogger("isoplug.test")
        logger.warning("first of a burst")
        app.show_new_lines()
        assert shown(app, "first of a burst")
        logger.warning("second of a burst")
        app.look_for_new_lines()  # what the timer calls: too soon after a write
        assert not shown(app, "second of a burst")
        app.busy_log_interval = 0.0  # the interval is over
        app.look_for_new_lines()
        assert shown(app, "second of a burst")


def test_feeding_lets_through_what_the_pane_needs_and_restores_the_levels() -> None:
    root, plugins = logging.getLogger(), logging.getLogger("plugin")
    saved = root.level, plugins.level
    root.setLevel(logging.WARNING)  # as in a program that never configured logging
    plugins.setLevel(logging.NOTSET)
    try:
        with feeding(LogFeed()) as feed:
            logging.getLogger("isoplug.host").info("host info")
            logging.getLogger("plugin.chatty").debug("plugin debug")
            logging.getLogger("isoplug.host").debug("host debug")
        assert [e.message for e in feed.entries()] == ["host info", "plugin debug"]
        assert (root.level, plugins.level) == (logging.WARNING, logging.NOTSET)
    finally:
        root.setLevel(saved[0])
        plugins.setLevel(saved[1])


async def test_level_key_sets_the_plugin_level_in_its_runner(tmp_path: Path) -> None:
    async with dashboard(tmp_path, "leveled") as (host, app, pilot):
        await host.call("leveled", "emit", "before")
        await eventually(lambda: shown(app, "done before"))
        assert shown(app, "ctx before INFO")
        await select(app, "leveled")
        await pilot.press("l")  # INFO -> WARNING
        await eventually(lambda: shown(app, "leveled now logs at WARNING"))
        await host.call("leveled", "emit", "after")
        await eventually(lambda: shown(app, "done after"))
        assert shown(app, "ctx after WARNING")
        # Filtered at the source: the INFO record never reached the host.
        assert not any("ctx after INFO" in e.message for e in app.feed.entries())


async def test_log_pane_follows_filters_and_pauses(tmp_path: Path) -> None:
    async with dashboard(tmp_path, "echo", "leveled") as (host, app, pilot):
        await host.call("echo", "say", ["echo says [bold red]hi[/]"], [])
        await host.call("leveled", "emit", "one")
        await eventually(lambda: shown(app, "done one") and shown(app, "echo says"))
        # Plugin text is shown as written, never read as markup.
        assert shown(app, "echo says [bold red]hi[/]")

        await select(app, "leveled")
        await pilot.press("f")  # follow the selected plugin only
        await eventually(lambda: not shown(app, "echo says"))
        assert shown(app, "done one")
        await pilot.press("v", "v", "v")  # DEBUG -> INFO -> WARNING -> ERROR
        await eventually(lambda: not shown(app, "vendor one WARNING"))
        assert shown(app, "done one")
        await pilot.press("v")  # back to DEBUG
        await eventually(lambda: shown(app, "vendor one WARNING"))

        await pilot.press("slash")
        await pilot.press(*"vendor", "enter")
        await eventually(lambda: not shown(app, "ctx one"))
        assert shown(app, "vendor one INFO")
        await pilot.press("slash", *["backspace"] * 6, "enter")
        await eventually(lambda: shown(app, "ctx one"))

        await pilot.press("p")  # pause leveled's lines: new ones are held back
        await host.call("leveled", "emit", "two")
        await eventually(lambda: any("done two" in e.message for e in app.feed.entries()))
        await pilot.pause()
        app.show_new_lines()
        assert not shown(app, "done two")
        assert shown(app, "done one")
        await pilot.press("p")
        await eventually(lambda: shown(app, "done two"))
        await pilot.press("f")  # all plugins again
        await eventually(lambda: shown(app, "echo says"))


async def test_a_plugin_removed_by_hot_reload_leaves_the_table(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    directory = copy_plugins(tmp_path, "echo", "leveled")
    with attached(LogFeed()) as feed:
        async with Host(directory, config=FAST, reload=True) as host:
            await host.wait_ready(20)
            assert host.reloader is not None
            await eventually(host.reloader.watching.is_set)
            app = PluginDashboard(host, feed)
            async with app.run_test(size=SIZE):
                await eventually(lambda: set(app.rows) == {"echo", "leveled"})
                shutil.rmtree(directory / "leveled")
                await eventually(lambda: set(app.rows) == {"echo"})
                assert app.query_one(DataTable).row_count == 1


async def test_the_pane_tells_the_hosts_report_from_a_plugins_imitation(tmp_path: Path) -> None:
    """As the console (tests/test_cli_attribution.py): the host's report about ``mimic``
    says ``isoplug:mimic``, the plugin's imitations say ``mimic``; following ``mimic`` shows
    both."""
    with attached(LogFeed()) as feed:
        async with Host(plugins_dir(tmp_path, "mimic"), config=FAST) as host:
            await host.wait_ready(20)
            await eventually(
                lambda: any(entry.message == "imitations sent" for entry in feed.entries())
            )
    lost = [entry for entry in feed.entries() if "never arrived" in entry.message]
    sources = sorted((entry.source, entry.label) for entry in lost)
    assert sources == [("isoplug:mimic", "warning"), ("mimic", "isoplug"), ("mimic", "warning")]
    assert all(entry.plugin == "mimic" for entry in lost)
    report = next(entry for entry in lost if entry.source == "isoplug:mimic")
    assert " isoplug:mimic warning  41 log records from plugin mimic never arrived" in report.line()
    assert all(LogFilter(plugin="mimic").accepts(entry) for entry in lost)


def test_filter_holds_back_only_a_paused_plugins_new_lines() -> None:
    def entry(serial: int, plugin: str | None, level: int = logging.INFO) -> LogEntry:
        return LogEntry(serial, 0.0, plugin, level, "info", f"line {serial}")

    log_filter = LogFilter(paused={"a": 2})
    assert log_filter.accepts(entry(2, "a"))
    assert not log_filter.accepts(entry(3, "a"))
    assert log_filter.accepts(entry(3, "b"))
    assert log_filter.accepts(entry(3, None))
    assert not LogFilter(level=logging.WARNING).accepts(entry(1, "a"))
    assert not LogFilter(text="LINE 2").accepts(entry(1, "a"))
    assert LogFilter(text="LINE 2").accepts(entry(2, "a"))


def test_process_sampler_reads_memory_cpu_and_uptime() -> None:
    sampler = ProcessSampler()
    first = sampler.sample(os.getpid())
    assert first.rss is not None and first.rss > 1024 * 1024
    assert first.uptime is not None and first.uptime >= 0
    assert first.cpu_percent is None  # nothing to compare with yet
    sum(range(200_000))
    assert sampler.sample(os.getpid()).cpu_percent is not None
    gone = sampler.sample(2**22 + 12345)
    assert (gone.rss, gone.cpu_percent, gone.uptime) == (None, None, None)


def test_cli_says_what_to_install_without_textual(tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['textual'] = None; from isoplug.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", blocked + f"sys.exit(main(['run', '--tui', {str(tmp_path)!r}]))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "pip install 'isoplug[tui]'" in result.stderr


@contextmanager
def tui_on_a_terminal(
    directory: Path, environment: dict[str, str]
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``isoplug run --tui DIRECTORY`` on a new pty, as a user runs it: the pty's side to read
    the screen from (and type on), and the child, killed on the way out if still running."""
    # A pty, and a child started on it by subprocess: never pty.fork() of this process, whose
    # threads a fork would copy in whatever state they are (Python 3.13 warns of deadlocks).
    terminal, user_side = os.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "isoplug", "run", "--tui", str(directory)],
        stdin=user_side,
        stdout=user_side,
        stderr=user_side,
        env={**environment, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(user_side)
    try:
        yield terminal, child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(terminal)


def test_isoplug_run_tui_on_a_terminal_shows_the_plugins_and_quits_on_q(tmp_path: Path) -> None:
    """As a user runs it: a real terminal (a pty), the real command line."""
    import select
    import time

    directory = plugins_dir(tmp_path, "echo")
    size = {"COLUMNS": "160", "LINES": "40"}
    screen = b""
    quit_sent = False
    deadline = time.monotonic() + 60
    with tui_on_a_terminal(directory, {**os.environ, **size}) as (terminal, child):
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(terminal, 65536)
                except OSError:  # the child closed the terminal: it ended
                    break
                if not chunk:
                    break
                screen += chunk
            if not quit_sent and b"ready" in screen and b"records/s" in screen:
                os.write(terminal, b"q")
                quit_sent = True
        returncode = child.wait(30)
    assert quit_sent, screen[-2000:]
    assert returncode == 0
    # Once the view is closed, the host stops its plugins and says so on the console.
    assert b"all plugins stopped" in screen


@pytest.mark.parametrize(
    ("encoding_env", "fix"),
    [
        ({"LC_ALL": "C", "PYTHONUTF8": "0"}, "run it in a UTF-8 locale (LC_ALL=C.UTF-8"),
        ({"PYTHONIOENCODING": "ascii"}, "unset PYTHONIOENCODING"),
    ],
)
def test_isoplug_run_tui_refuses_a_terminal_encoding_without_its_characters(
    tmp_path: Path, encoding_env: dict[str, str], fix: str
) -> None:
    """Textual has no ASCII drawing: on an ASCII terminal each box character came out as
    the text ``\\u2500``. A clear refusal instead, exit code 2, before any screen is drawn."""
    import select

    directory = plugins_dir(tmp_path, "echo")
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("LC_ALL", "LC_CTYPE", "LANG", "PYTHONUTF8", "PYTHONIOENCODING")
    }
    screen = b""
    with tui_on_a_terminal(directory, {**environment, **encoding_env}) as (terminal, child):
        # Until the child closes the terminal: it ends on its own, or the timeout kills it.
        while select.select([terminal], [], [], 60)[0]:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        returncode = child.wait(30)
    said = screen.decode("ascii", "replace")
    assert returncode == 2, said
    assert (
        "isoplug run: --tui needs a terminal encoding that can draw its dashboard "
        "(stdout's is 'ascii'): " + fix
    ) in said
    assert "\\u2500" not in said
