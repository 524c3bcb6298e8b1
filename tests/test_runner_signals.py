"""Signals a runner or the zygote gets from outside the host: stop signals blocked in the mask
a runner inherits."""

from __future__ import annotations

import signal
from pathlib import Path

from isoplug import Host
from tests.plugins_fixtures import FAST, plugins_dir
from tests.process_memory import blocked_signals

STOP = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


async def test_a_runner_unblocks_the_stop_signals_its_host_blocked(tmp_path: Path) -> None:
    """An application that blocked the stop signals in the thread running its host passes the
    mask on to the runners it spawns: each unblocks them, so that the host's SIGTERM reaches
    it (blocked, the signal would wait for the SIGKILL after it)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    try:
        async with Host(plugins_dir(tmp_path, "echo", start="spawn"), config=FAST) as host:
            await host.wait_ready(20)
            runner = host.plugin("echo").pid
            assert runner is not None
            assert not blocked_signals(runner) & STOP
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
