"""Plugin directories for the runtime tests, and helpers to run a host over a few of them.

Each subdirectory is one plugin; a test links the ones it needs into a fresh plugins
directory, so that a host starts only those runners.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from isoplug import Host, PluginState
from isoplug.host import PluginInfo, SupervisorConfig
from isoplug.logs import LogMetrics, ReplayLimits
from isoplug.testing import FAST as FAST  # re-exported: the tests import it from here
from isoplug.testing import eventually
from tests.record_waiter import RecordWaiter, SlowFloodCounter, watching

FIXTURES = Path(__file__).parent

#: For tests of what a runner's teardown ends: a short teardown, and the host's own deadlines
#: (health, shutdown) far longer, so that only the runner's own doing can end it in time.
SHORT_TEARDOWN = SupervisorConfig(
    health_interval=0.2,
    health_timeout=30.0,
    teardown_timeout=0.5,
    shutdown_timeout=30.0,
    terminate_timeout=1.0,
)


def copy_plugins(tmp_path: Path, *names: str) -> Path:
    """A plugins directory holding copies of the fixture plugins ``names``, for tests that
    edit them (hot reload)."""
    directory = tmp_path / "plugins"
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(
            FIXTURES / name, directory / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return directory


#: For tests whose runner leaves a process holding its stdout/stderr, which the host then waits
#: for: the wait's length is not what they test.
QUICK_DRAIN = dataclasses.replace(FAST, stdio_drain_timeout=0.2)


def plugins_dir(tmp_path: Path, *names: str, start: str = "fork") -> Path:
    """A plugins directory holding (links to) the fixture plugins ``names``; with ``start``
    other than ``"fork"``, copies whose manifests say so (``"spawn"``)."""
    if start != "fork":
        directory = copy_plugins(tmp_path, *names)
        for name in names:
            manifest = directory / name / "plugin.toml"
            text = manifest.read_text()
            manifest.write_text(text.replace("\nversion = ", f'\nstart = "{start}"\nversion = ', 1))
        return directory
    directory = tmp_path / "plugins"
    directory.mkdir(exist_ok=True)
    for name in names:
        os.symlink(FIXTURES / name, directory / name)
    return directory


@asynccontextmanager
async def reloading(directory: Path) -> AsyncIterator[Host]:
    """A started host over ``directory`` under hot reload: every plugin ready (a failed one
    raises PluginFailed), the watcher up."""
    async with Host(directory, config=FAST, reload=True) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        yield host


@asynccontextmanager
async def running(
    tmp_path: Path,
    *names: str,
    config: SupervisorConfig = FAST,
    log_limits: ReplayLimits | None = None,
    logger: str | None = "plugin",
    raise_on_failure: bool = True,
    start: str = "fork",
) -> AsyncIterator[tuple[Host, RecordWaiter]]:
    """A started host over the fixture plugins ``names`` (all ready: a failed one raises
    PluginFailed, unless ``raise_on_failure`` is False; their runners forked, or as ``start``
    says), and a waiter seeing every record of ``logger`` (None: the root logger, so the
    host's own records too)."""
    with watching(logger) as waiter:
        async with Host(
            plugins_dir(tmp_path, *names, start=start), config=config, log_limits=log_limits
        ) as host:
            await host.wait_ready(20, raise_on_failure=raise_on_failure)
            yield host, waiter


async def gated_host(tmp_path: Path) -> tuple[Host, asyncio.Event]:
    """A started host whose one plugin ("gated") stays STARTING: its setup waits forever.
    Returns once the setup waits."""
    entered = asyncio.Event()

    async def never() -> None:
        entered.set()
        await asyncio.Event().wait()

    host = Host(plugins_dir(tmp_path, "gated"), config=FAST)
    host.register_capability("gate.wait", never)
    await host.start()
    await asyncio.wait_for(entered.wait(), 30)
    return host, entered


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for an absent init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        # The process ended between the open and the read (the kernel answers ESRCH then).
        return False
    return state not in ("Z", "X")


def assert_printed_traceback(record: logging.LogRecord, type_name: str, message: str) -> None:
    """``record`` is a printed traceback's: its message the exception's line, its ``exc_info``
    a genuine exception of that type and message, with a traceback that formats as Python's."""
    assert record.getMessage() == f"{type_name}: {message}"
    assert record.exc_info is not None
    exc_type, value, tb = record.exc_info
    assert exc_type is not None and exc_type.__name__ == type_name and str(value) == message
    assert isinstance(tb, types.TracebackType)
    text = logging.Formatter().formatException(record.exc_info)
    assert text.startswith('Traceback (most recent call last):\n  File "')
    assert text.endswith(f"\n{type_name}: {message}")


@dataclasses.dataclass(frozen=True)
class SlowFlood:
    """What :func:`flood_under_a_slow_handler` saw."""

    #: What the plugin's ``flood`` method returned.
    returned: object
    #: The plugin once stopped after the flood, and its final log metrics.
    stopped: PluginInfo
    metrics: LogMetrics
    #: Flood lines the slow handler got, and the drops the host's reports added up to.
    delivered: int
    reported_dropped: int


async def flood_under_a_slow_handler(tmp_path: Path, plugin: str, lines: int) -> SlowFlood:
    """Have ``plugin`` (a fixture with ``flood(count)`` printing ``flood <n>`` lines and
    ``pid()``) flood ``lines`` lines onto its stdout while the host's handler is slow
    (:class:`~tests.record_waiter.SlowFloodCounter`), with tight health checks. Checks that
    the runner was never taken for hung (same pid, ready, no restart), then stops it, so that
    the metrics are final."""
    config = dataclasses.replace(FAST, health_interval=0.1, health_timeout=1.0)
    counter = SlowFloodCounter()
    stdout = logging.getLogger(f"plugin.{plugin}.stdout")
    stdout.addHandler(counter)
    with watching(f"plugin.{plugin}", propagate=False) as reports:
        stdout.propagate = False  # the flood's records for the counter alone
        try:
            async with Host(plugins_dir(tmp_path, plugin), config=config) as host:
                await host.wait_ready(20)
                pid = host.plugin(plugin).pid
                returned = await host.call(plugin, "flood", count=lines)
                info = host.plugin(plugin)
                assert info.state is PluginState.READY and info.pid == pid and info.restarts == 0
                assert await host.call(plugin, "pid") == pid
                # Stopping waits until what was read is replayed: the metrics are final then.
                stopped = await host.stop(plugin)
                metrics = host.log_metrics(plugin)
        finally:
            stdout.removeHandler(counter)
            stdout.propagate = True
    reported = sum(
        int(match.group(1).replace(",", ""))
        for record in reports.records
        if (match := re.search(r"dropped ([\d,]+) records of the stdout", record.getMessage()))
    )
    return SlowFlood(returned, stopped, metrics, counter.count, reported)
