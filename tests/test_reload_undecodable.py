"""Hot reload where watchfiles cannot watch: a file name that is not UTF-8 written into a
plugin's folder (which ended the watch for good), a plugins folder below a folder whose name
is not UTF-8 (which failed it at once). The folder is read for changes instead, said once in
a WARNING, and an edit still restarts its plugin. Real files, a real host, real runners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import Records, eventually, watching
from tests.plugins_fixtures import copy_plugins, reloading
from tests.test_host_reload import touch_code

pytest.importorskip("watchfiles")


async def edit_restarts(host_plugins: Path, host: Host) -> None:
    """An edit of the echo plugin's code in ``host_plugins`` restarts it."""
    pid = host.plugin("echo").pid
    touch_code(host_plugins / "echo" / "echo_plugin.py")
    await eventually(
        lambda: (
            host.plugin("echo").pid not in (None, pid)
            and host.plugin("echo").state.value == "ready"
        )
    )


def _said_polled(records: Records) -> str:
    said = records.select(text="cannot be watched for changes")
    assert len(said) == 1, said
    return said[0].getMessage()


async def test_a_file_name_that_is_not_utf8_does_not_end_the_watch(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    with watching("isoplug.host") as records:
        async with reloading(directory) as host:
            data = os.path.join(os.fsencode(directory / "echo"), b"caf\xe9.txt")
            with open(data, "wb") as file:
                file.write(b"state")
            await records.wait_for_record(text="cannot be watched for changes")
            await edit_restarts(directory, host)
            # The file changed again: nothing ends, and the next edit still restarts.
            with open(data, "ab") as file:
                file.write(b"more")
            await edit_restarts(directory, host)
    assert "caf\\xE9.txt is not UTF-8 text" in _said_polled(records)
    assert not records.select(text="watching the plugins folder stopped")


async def test_a_plugins_folder_below_a_folder_not_named_in_utf8_is_watched(
    tmp_path: Path,
) -> None:
    parent = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"par\xe9nt")))
    directory = copy_plugins(parent, "echo")
    with watching("isoplug.host") as records:
        async with reloading(directory) as host:
            await edit_restarts(directory, host)
    said = _said_polled(records)
    assert said.startswith(f"reload: {tmp_path}/par\\udce9nt/plugins cannot be watched")
    assert "its path is not UTF-8 text" in said
    assert not records.select(text="watching the plugins folder stopped")
