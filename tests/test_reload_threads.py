"""Hot reload's watch runs in a thread of the host's own (``isoplug-reload``), which ends with
``aclose()``: watchfiles' ``awatch`` left an idle "AnyIO worker thread" in the application
for as long as its loop lived."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from isoplug import PluginState
from isoplug.testing import eventually
from tests.plugins_fixtures import copy_plugins, reloading
from tests.processes import child_env

pytest.importorskip("watchfiles")


def threads_since(before: set[threading.Thread]) -> list[str]:
    """The names of the threads alive now that were not in ``before``, but those of a zygote
    (shared by the session's hosts: it outlives this test's host)."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and not t.name.startswith("isoplug-zygote")
    ]


async def test_the_reload_watch_is_a_thread_of_the_host_that_ends_with_its_close(
    tmp_path: Path,
) -> None:
    before = set(threading.enumerate())
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        first = host.plugin("echo").pid
        with (directory / "echo" / "echo_plugin.py").open("a") as source:
            source.write("\n# edited\n")
        # A batch was watched for, handed to the loop and applied: the watch works.
        await host.wait_for(
            "echo", lambda info: info.state is PluginState.READY and info.pid != first, 20
        )
        running = threads_since(before)
        assert "isoplug-reload" in running, running
        # docs/host.md, "The host's threads": all named isoplug-...
        assert all(name.startswith("isoplug-") for name in running), running
    left = threads_since(before)
    assert "isoplug-reload" not in left, left
    assert all(name.startswith("isoplug-") for name in left), left
    await eventually(lambda: not threads_since(before))


_LOW_WATCH_LIMIT = """
import asyncio, json, logging, sys
from pathlib import Path
from isoplug import PluginState
from tests.plugins_fixtures import reloading
said = []
class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
logging.getLogger("isoplug.host").addHandler(Keep())
async def main():
    directory = Path(sys.argv[1])
    async with reloading(directory) as host:
        first = host.plugin("echo").pid
        deep = directory / "echo" / "vendored" / "d30" / "helper.py"
        deep.write_text("X = 1\\n")
        info = await host.wait_for(
            "echo", lambda i: i.state is PluginState.READY and i.pid != first, 30
        )
    print(json.dumps({"restarted": info.pid != first, "said": said}))
asyncio.run(main())
"""


def test_past_the_systems_file_watch_limit_changes_are_polled_for_and_said(
    tmp_path: Path,
) -> None:
    """A plugins folder with more folders than the system lets a user watch (a user
    namespace's inotify limit of 5, as a container's can be low): watchfiles' skipping of
    unreadable folders dropped the "watch limit reached" error, and a save deep in the tree
    was never seen, unsaid. Now the host polls instead, says so with the fix, and the save
    restarts the plugin."""
    directory = copy_plugins(tmp_path, "echo")
    for index in range(40):
        (directory / "echo" / "vendored" / f"d{index}").mkdir(parents=True)
    limited = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            'echo 5 > /proc/sys/user/max_inotify_watches && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            _LOW_WATCH_LIMIT,
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    if limited.returncode != 0 and "unshare" in limited.stderr and "json" not in limited.stdout:
        pytest.skip(f"no user namespace with its own inotify limit here: {limited.stderr[:200]}")
    assert limited.returncode == 0, limited.stderr
    result = json.loads(limited.stdout.splitlines()[-1])
    assert result["restarted"], result
    warnings = [line for line in result["said"] if "limit of file watches is reached" in line]
    assert len(warnings) == 1, result["said"]
    assert "user.max_inotify_watches = 5" in warnings[0], warnings
    assert "sysctl fs.inotify.max_user_watches=" in warnings[0], warnings
