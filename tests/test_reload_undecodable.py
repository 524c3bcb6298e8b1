"""Hot reload where watchfiles cannot watch: a file name that is not UTF-8 written into a
plugin's folder (which ended the watch for good), a plugins folder below a folder whose name
is not UTF-8 (which failed it at once). The folder is read for changes instead, said once in
a WARNING, and an edit still restarts its plugin. Real files, a real host, real runners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.reload_poll import MAX_POLLED_ENTRIES
from isoplug.testing import Records, eventually, watching
from tests.plugins_fixtures import copy_plugins, reloading
from tests.test_host_reload import touch_code

pytest.importorskip("watchfiles")


async def edit_restarts(host_plugins: Path, host: Host) -> None:
    """An edit of the echo plugin's code in ``host_plugins`` restarts it."""
    await code_edit_restarts(host, "echo", host_plugins / "echo" / "echo_plugin.py")


async def code_edit_restarts(host: Host, plugin_id: str, source: Path) -> None:
    """An edit of ``source`` restarts the plugin ``plugin_id``."""
    pid = host.plugin(plugin_id).pid
    touch_code(source)
    await eventually(
        lambda: (
            host.plugin(plugin_id).pid not in (None, pid)
            and host.plugin(plugin_id).state.value == "ready"
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


async def _write_not_utf8_name(host: Host, folder: Path) -> bytes:
    """The scribbler plugin writes a file named in latin-1 into ``folder`` (its own)."""
    data = os.path.join(os.fsencode(folder), b"caf\xe9.txt")
    code = f"open({data!r}, 'wb').write(b'state')"
    assert await host.call("scribbler", "run_python", code=code) == 0
    return data


def _polled_paths(records: Records) -> str:
    """Every path the polls said they found changed."""
    return "\n".join(r.getMessage() for r in records.select(text="(not watched)"))


async def test_a_name_not_utf8_gets_only_its_plugin_folder_read_the_others_stay_watched(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo", "scribbler")
    scribbler = directory.resolve() / "scribbler"
    with watching("isoplug.host") as records:
        async with reloading(directory) as host:
            assert host.reloader is not None
            await _write_not_utf8_name(host, scribbler)
            await records.wait_for_record(text="cannot be watched for changes")
            # Only the folder holding the name is read: the plugins folder stays watched.
            assert host.reloader.polled == (str(scribbler),)
            await edit_restarts(directory, host)
            # The echo plugin's edit came by the watch: no poll found it.
            assert "echo_plugin.py" not in _polled_paths(records)
            await code_edit_restarts(host, "scribbler", scribbler / "scribbler_plugin.py")
            # ... and the scribbler's by a poll of its folder.
            assert "scribbler_plugin.py" in _polled_paths(records)
            await edit_restarts(directory, host)
    said = _said_polled(records)
    assert said.startswith(f"reload: {scribbler} cannot be watched"), said
    assert "the other folders stay watched" in said
    assert not records.select(text="watching the plugins folder stopped")


async def test_a_polled_folder_is_read_up_to_a_cap_said_once(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "scribbler")
    scribbler = directory.resolve() / "scribbler"
    # Data a plugin keeps beside its code: more files than a read looks at.
    for batch in range(MAX_POLLED_ENTRIES // 1000 + 1):
        folder = scribbler / "cache" / f"d{batch}"
        folder.mkdir(parents=True)
        for number in range(1000):
            (folder / f"f{number}").touch()
    with watching("isoplug.host") as records:
        async with reloading(directory) as host:
            await _write_not_utf8_name(host, scribbler)
            capped = await records.wait_for_record(text="read for changes (not watched) hold")
            # Its code, read before its data, still reloads; the other plugin's too.
            await code_edit_restarts(host, "scribbler", scribbler / "scribbler_plugin.py")
            await edit_restarts(directory, host)
    assert f"more than {MAX_POLLED_ENTRIES} files" in capped.getMessage()
    assert f"in {scribbler}/cache/d" in capped.getMessage()
    assert len(records.select(text="read for changes (not watched) hold")) == 1
