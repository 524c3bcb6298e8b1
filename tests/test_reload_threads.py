"""Hot reload's watch runs in a thread of the host's own (``isoplug-reload``), which ends with
``aclose()``: watchfiles' ``awatch`` left an idle "AnyIO worker thread" in the application
for as long as its loop lived."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from isoplug import PluginState
from isoplug.testing import eventually
from tests.plugins_fixtures import copy_plugins, reloading

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
