"""A host in a process of its own, for tests that kill it: ``python tests/host_child.py DIR
[PLUGIN:METHOD ...]``.

It runs a :class:`~isoplug.Host` over the plugins of ``DIR`` and prints, one per line, on stdout:
``runner <id> <pid>`` for every ready plugin and ``socket-dir <path>`` for each of its two
listeners, then ``ready``; every log record follows as ``<logger>: <message>``. Then it starts
each call ``PLUGIN:METHOD`` (not awaited: they may never return) and waits to be killed.

``--cgroup DIR`` first moves this process into the cgroup ``DIR`` (its runners start there too).
``--fork-child`` / ``--spawn-child``, once ready, starts a process of the application's that
sleeps for an hour (``os.fork()``, or ``subprocess.Popen``) and prints ``app-child <pid>``:
it must not keep the runners alive after the host's death.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from typing import Any

from isoplug import Host, SupervisorConfig


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(arguments: list[str]) -> None:
    if arguments[:1] == ["--cgroup"]:
        with open(os.path.join(arguments[1], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        arguments = arguments[2:]
    app_child = ""
    if arguments[:1] in (["--fork-child"], ["--spawn-child"]):
        app_child, arguments = arguments[0], arguments[1:]
    directory, calls = arguments[0], arguments[1:]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    # Health checks that never fire during a test: the plugins block on purpose.
    config = SupervisorConfig(health_interval=3600, health_timeout=3600)
    async with Host(directory, config=config) as host:
        for info in await host.wait_ready(30):
            say(f"runner {info.id} {info.pid}")
        listener = host._listener
        assert listener is not None
        for address in (listener.address.path, host._log_bridge.address.removeprefix("unix:")):
            say(f"socket-dir {os.path.dirname(address)}")
        if app_child == "--fork-child":
            pid = os.fork()
            if pid == 0:
                # Not the test's pipe: it must end when the host does.
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                time.sleep(3600)
                os._exit(0)
            say(f"app-child {pid}")
        elif app_child == "--spawn-child":
            sleeper = [sys.executable, "-c", "import time; time.sleep(3600)"]
            quiet = subprocess.DEVNULL
            say(f"app-child {subprocess.Popen(sleeper, stdout=quiet, stderr=quiet).pid}")
        say("ready")
        tasks: list[asyncio.Future[Any]] = []
        for call in calls:
            plugin, method = call.split(":")
            tasks.append(asyncio.ensure_future(host.call_with(plugin, method, timeout=None)))
        done, _ = await asyncio.wait(tasks or [asyncio.ensure_future(asyncio.Event().wait())])
        for task in done:
            say(f"call ended: {task.exception() or task.result()!r}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
