"""The host runs inside the application's loop, whose default executor (``asyncio.to_thread``)
is the application's: a web app fills it with its own blocking work. The host's supervision
never waits for it (docs/host.md, "The host's threads")."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from isoplug import Host, PluginState
from tests.plugins_fixtures import FAST, plugins_dir

#: How long the application's job holds the default executor at most: only where the host
#: waits for that executor (the failure tested) does the job end by this, so that the test
#: fails saying so, within the async tests' timeout (tests/conftest.py), and does not hang.
_HANG_GUARD = 30.0

#: What the host runs on the application's loop (the runner, the command line and its demo
#: run on loops of their own).
_HOST_SIDE = ("host", "logs", "rpc", "otel", "transport", "wire")


async def test_a_host_works_while_the_applications_default_executor_is_full(
    tmp_path: Path,
) -> None:
    """The application's job holds the only worker of the loop's default executor from before
    the host starts until after it closed: meanwhile the host starts, accounts for a runner
    killed from outside and restarts it, restarts another on request, serves calls, and
    closes."""
    loop = asyncio.get_running_loop()
    application_executor = ThreadPoolExecutor(1, thread_name_prefix="application")
    loop.set_default_executor(application_executor)
    release = threading.Event()
    job = loop.run_in_executor(None, release.wait, _HANG_GUARD)
    try:
        async with Host(plugins_dir(tmp_path, "echo", "raiser"), config=FAST) as host:
            await host.wait_ready(30)
            killed = host.plugin("echo").pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            info = await host.wait_for(
                "echo", lambda i: i.restarts == 1 and i.state is PluginState.READY, timeout=30
            )
            assert info.last_exit is not None and info.last_exit.pid == killed
            assert "killed by SIGKILL, not sent by the host" in info.last_exit.describe()
            assert await host.call("echo", "echo", 1) == 1

            before = host.plugin("raiser").pid
            await host.restart("raiser")
            restarted = host.plugin("raiser")
            assert restarted.state is PluginState.READY and restarted.pid != before
        assert host.plugin("echo").state is PluginState.STOPPED
        assert not job.done(), "the host waited for the application's default executor"
    finally:
        release.set()
        await job
        application_executor.shutdown()


def _default_executor_uses(path: Path) -> list[str]:
    """``asyncio.to_thread(...)``, ``loop.run_in_executor(None, ...)`` and
    ``loop.getaddrinfo(...)`` calls in ``path``."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if isinstance(node.func, ast.Name):
            name = node.func.id
        on_default = (
            name == "run_in_executor"
            and bool(node.args)
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value is None
        )
        # loop.getaddrinfo runs socket.getaddrinfo on the default executor.
        on_loop_resolution = (
            name == "getaddrinfo"
            and isinstance(node.func, ast.Attribute)
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "socket")
        )
        if name == "to_thread" or on_default or on_loop_resolution:
            uses.append(f"{path}:{node.lineno}: {ast.unparse(node)[:80]}")
    return uses


def test_nothing_the_host_runs_on_the_applications_loop_uses_its_default_executor() -> None:
    """The steps the test above takes are not all of them (hot reload, leftovers): none of
    the modules on the host's side may queue work on the application's default executor
    (``isoplug.off_loop`` runs such steps)."""
    source = Path(__file__).parent.parent / "src" / "isoplug"
    uses = [
        use
        for layer in _HOST_SIDE
        for path in sorted((source / layer).rglob("*.py"))
        for use in _default_executor_uses(path)
    ]
    assert not uses, "\n".join(uses)
