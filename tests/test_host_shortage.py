"""The host out of file descriptors: a runner it cannot start is said as such (the limit, and
what to change), never as a bug in isoplug, and is restarted with backoff as after a crash;
once descriptors are free again, the plugin comes back."""

from __future__ import annotations

from pathlib import Path

from tests.plugins_fixtures import plugins_dir
from tests.processes import run_python

#: A host whose descriptor limit drops below what it holds while one plugin restarts, and
#: rises again once the plugin is waiting to restart.
_APP = """
import asyncio, os, resource, sys
import isoplug, isoplug.testing
async def main() -> None:
    async with isoplug.Host(sys.argv[1], config=isoplug.testing.FAST) as host:
        await host.wait_ready(20)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (held - 12, hard))
        restarting = asyncio.ensure_future(host.restart("echo"))
        await host.wait_for("echo", lambda i: i.state is isoplug.PluginState.RESTARTING, 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await asyncio.wait_for(restarting, 30)
        await host.wait_for("echo", lambda i: i.state is isoplug.PluginState.READY, 30)
        print("app: ready again", flush=True)
asyncio.run(main())
"""


def test_a_runner_the_host_lacks_descriptors_for_is_said_and_restarted(tmp_path: Path) -> None:
    result = run_python(_APP, str(plugins_dir(tmp_path, "echo")), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "app: ready again\n"
    assert "is out of file descriptors (Too many open files): each running plugin takes " in (
        result.stderr
    ), result.stderr
    assert "crashed: runner echo did not start; the host (ulimit -n " in result.stderr
    assert "isoplug bug" not in result.stderr and "bug in isoplug" not in result.stderr
