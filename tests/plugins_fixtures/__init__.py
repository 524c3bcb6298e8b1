"""Plugin directories for the runtime tests, and helpers to run a host over a few of them.

Each subdirectory is one plugin; a test links the ones it needs into a fresh plugins
directory, so that a host starts only those runners.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from isoplug import Host
from isoplug.host import SupervisorConfig
from isoplug.logs import ReplayLimits
from tests.record_waiter import RecordWaiter, watching

FIXTURES = Path(__file__).parent

#: Short timings so that hangs and crash loops are detected within a second or two. The
#: health timeout stays at 1 s: a ping is answered in microseconds, but a 2-core machine
#: starting several Python processes can stall a runner for a few hundred milliseconds.
FAST = SupervisorConfig(
    ready_timeout=15.0,
    health_interval=0.2,
    health_timeout=1.0,
    shutdown_timeout=3.0,
    teardown_timeout=1.0,
    terminate_timeout=1.0,
    call_timeout=15.0,
)


def plugins_dir(tmp_path: Path, *names: str) -> Path:
    """A plugins directory holding (links to) the fixture plugins ``names``."""
    directory = tmp_path / "plugins"
    directory.mkdir(exist_ok=True)
    for name in names:
        os.symlink(FIXTURES / name, directory / name)
    return directory


@asynccontextmanager
async def running(
    tmp_path: Path,
    *names: str,
    config: SupervisorConfig = FAST,
    log_limits: ReplayLimits | None = None,
    logger: str | None = "plugin",
) -> AsyncIterator[tuple[Host, RecordWaiter]]:
    """A started host over the fixture plugins ``names`` (all ready), and a waiter seeing every
    record of ``logger`` (None: the root logger, so the host's own records too)."""
    with watching(logger) as waiter:
        async with Host(
            plugins_dir(tmp_path, *names), config=config, log_limits=log_limits
        ) as host:
            await host.wait_ready(20)
            yield host, waiter


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for an absent init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
