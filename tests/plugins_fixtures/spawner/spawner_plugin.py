"""A test plugin whose worker processes are spawned, not forked from its runner."""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import isoplug

CHILD = (
    "import logging, os\n"
    "from isoplug.logs import forward_logs\n"
    "forward_logs()\n"
    "logging.getLogger('spawner.child').debug('from a python child %d', os.getpid())\n"
)

#: A worker whose parent exits as soon as it has started it: the worker waits to be re-parented
#: (an orphan, in its runner's process group still), then logs.
ORPHAN_WORKER = (
    "import logging, os, sys, time\n"
    "from isoplug.logs import forward_logs\n"
    "parent = int(sys.argv[1])\n"
    "while os.getppid() == parent:\n"
    "    time.sleep(0.005)\n"
    "forward_logs()\n"
    "logging.getLogger('spawner.orphan').warning('from an orphan worker %d', os.getpid())\n"
)
ORPHANING_PARENT = (
    "import os, sys\n"
    "from subprocess import DEVNULL, Popen\n"
    f"worker = Popen([sys.executable, '-c', {ORPHAN_WORKER!r}, str(os.getpid())], stdout=DEVNULL)\n"
    "print(worker.pid)\n"
)


def work(number: int) -> int:
    logging.getLogger("spawner.worker").debug("from a %s worker %d", "spawned", number)
    return os.getpid()


class Spawner(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    def python_child_named(self, name: str) -> str:
        """A Python subprocess given the plugin's log environment, forwarding under ``name``;
        what it said on stderr."""
        code = f"from isoplug.logs import forward_logs\nforward_logs(name={name!r})\n"
        child = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **self.ctx.log_child_env()},
            capture_output=True,
            text=True,
            check=False,
        )
        return child.stderr

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    def pool(self, method: str) -> list[int]:
        """Four items on two workers started by ``method``; their pids, item by item."""
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(
            2, mp_context=context, initializer=self.ctx.log_initializer()
        ) as pool:
            return list(pool.map(work, range(4)))

    @isoplug.method
    def orphan_child(self) -> int:
        """A Python worker given the plugin's log environment, double-forked (its parent exits
        at once); its pid."""
        parent = subprocess.run(
            [sys.executable, "-c", ORPHANING_PARENT],
            env={**os.environ, **self.ctx.log_child_env()},
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        return int(parent.stdout)

    @isoplug.method
    def python_script(self, path: str, args: list[str]) -> tuple[int, str, str]:
        """``python path args`` given the plugin's log environment: its exit code, and what it
        wrote on stdout and stderr."""
        child = subprocess.run(
            [sys.executable, path, *args],
            env={**os.environ, **self.ctx.log_child_env()},
            capture_output=True,
            text=True,
            check=False,
        )
        return child.returncode, child.stdout, child.stderr

    @isoplug.method
    def python_child(self) -> int:
        """A Python subprocess given the plugin's log environment; its pid once it ended."""
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], env={**os.environ, **self.ctx.log_child_env()}
        )
        child.wait()
        return child.pid
