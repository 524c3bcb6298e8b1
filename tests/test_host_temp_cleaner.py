"""A host running for weeks outlives a temporary-file cleaner deleting its folders in $TMPDIR
(its two listeners' socket folders, the isoplug link of runners with an interpreter of their
own): real hosts, real runners, forked, spawned and with their own interpreter."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.host import socket_folders
from isoplug.host.isoplug_link import isoplug_only_folder
from isoplug.testing import eventually
from isoplug.transport import parse_address
from tests.open_resources import owner_lock_is_held, socket_dirs
from tests.plugins_fixtures import FAST, FIXTURES, plugins_dir, running
from tests.processes import child_env
from tests.record_waiter import watching

#: One copy of the ``chronicler`` fixture per way a runner starts: forked from the zygote (the
#: default), spawned, and spawned with an interpreter of its own (which imports isoplug through
#: the host's isoplug link folder).
STARTS = {
    "forked": "",
    "spawned": 'start = "spawn"',
    "own": f"python = {json.dumps(sys.executable)}",
}

#: What a stranger leaves in a folder it made under the name of one the cleaner deleted.
THEIRS = "not the host's"


def chroniclers(tmp_path: Path) -> Path:
    """A plugins folder with a ``chronicler`` per way of starting (see :data:`STARTS`)."""
    directory = tmp_path / "plugins"
    for plugin_id, line in STARTS.items():
        shutil.copytree(
            FIXTURES / "chronicler",
            directory / plugin_id,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        manifest = directory / plugin_id / "plugin.toml"
        text = manifest.read_text().replace('id = "chronicler"', f'id = "{plugin_id}"\n{line}')
        manifest.write_text(text)
    return directory


def listener_folders(host: Host) -> list[str]:
    """The private folders of the host's control listener and of its log listener."""
    assert host._listener is not None
    control = host._listener.address.path
    logs = parse_address(host._log_bridge.address).path
    return [os.path.dirname(control), os.path.dirname(logs)]


def make_as_a_stranger(folder: str) -> None:
    """A folder made under ``folder``'s name by someone else (another mode: the test runs as
    one user), holding a file of theirs."""
    os.mkdir(folder)
    os.chmod(folder, 0o755)
    Path(folder, "theirs").write_text(THEIRS)


def assert_private(folder: str) -> None:
    info = os.stat(folder)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid(), folder


async def test_runners_start_again_after_a_temp_cleaner_deleted_the_hosts_folders(
    tmp_path: Path,
) -> None:
    """Once the host's folders are deleted (one made again by a stranger under its name), the
    runners running keep working, and each kind of runner restarts, connects and forwards its
    records: the host listens again in fresh private folders, never the stranger's, and says
    so in one WARNING. Closing removes its new folders and leaves the stranger's alone."""
    with watching() as records:
        async with Host(chroniclers(tmp_path), config=FAST) as host:
            await host.wait_ready(60)
            first = {plugin_id: host.plugin(plugin_id).pid for plugin_id in STARTS}
            folders = [*listener_folders(host), isoplug_only_folder()]
            assert set(folders) <= socket_dirs()
            for folder in folders:
                shutil.rmtree(folder)  # as a temporary-file cleaner does
            make_as_a_stranger(folders[0])
            for plugin_id, pid in first.items():
                assert await host.call(plugin_id, "pid") == pid  # connected: goes on
            for plugin_id in STARTS:
                info = await host.restart(plugin_id)
                assert info.state is PluginState.READY, info.error
                assert info.pid != first[plugin_id]
                assert await host.call(plugin_id, "pid") == info.pid
                # Through its log connection (a record on stderr would have no extras).
                await host.call(plugin_id, "log_numbered", 1)
                record = await records.wait_for_record(plugin=plugin_id, logger="chronicler.work")
                assert record.runner_pid == info.pid and record.n == 0  # type: ignore[attr-defined]
            renewed = [*listener_folders(host), isoplug_only_folder()]
            # The stranger's folder is not used: a fresh one; the others made again as were.
            assert renewed[0] != folders[0] and renewed[1:] == folders[1:]
            assert os.path.dirname(renewed[0]) == os.path.dirname(folders[0])
            for folder in renewed:
                assert_private(folder)
                # Made again, locked again: a kill now leaves them to the next host.
                assert owner_lock_is_held(folder)
            said = records.select(logger="isoplug.host", text="were deleted")
            assert len(said) == 1 and said[0].levelno == logging.WARNING
            message = said[0].getMessage()
            assert message.startswith(
                "the host's folders in the temporary folder were deleted (by a temporary-file "
                f"cleaner?): the runners' control listener: its folder {folders[0]} was deleted "
                f"and made again by someone else (owner uid {os.getuid()}, mode drwxr-xr-x); "
                f"listening again at unix:{renewed[0]}/sock (runners started from now on are "
                f"given it); the log listener: its folder {folders[1]} was deleted; listening "
                "again at the same path, made again; the isoplug link of runners with an "
                f"interpreter of their own: its folder {folders[2]} was deleted; made again in "
                f"{renewed[2]}. "
            ), message
    assert not {*renewed[:2]} & socket_dirs()
    assert Path(folders[0], "theirs").read_text() == THEIRS
    assert not [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_host_whose_folders_were_deleted_closes_cleanly(tmp_path: Path) -> None:
    """Closing a host whose socket folders a cleaner deleted says so at DEBUG only, with no
    error nor traceback; one that a stranger made again under the old name is left alone,
    with a WARNING: the host removes only what it made."""
    with watching() as records:
        async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
            await host.wait_ready(20)
            control, logs = listener_folders(host)
            shutil.rmtree(control)
            shutil.rmtree(logs)
            make_as_a_stranger(control)
    assert Path(control, "theirs").read_text() == THEIRS
    assert not os.path.exists(logs)
    assert not [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info]
    warned = [r.getMessage() for r in records.select(logger="isoplug", level=logging.WARNING)]
    assert warned == [
        f"left {control} alone: it is not the one this process made, which was deleted and "
        f"made again by someone else (owner uid {os.getuid()}, mode drwxr-xr-x)"
    ]
    gone = records.select(logger="isoplug.transport", text=f"not removing {logs}")
    assert [r.levelno for r in gone] == [logging.DEBUG]


async def test_between_starts_the_folders_are_made_again_where_a_runners_children_reach_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose runners do not restart checks its folders every KEEP_INTERVAL seconds
    too: deleted, the log listener's folder is made again at the same path, where a process a
    running plugin starts afterwards (given the address with ``ctx.log_child_env()``) logs
    through; and the folders' times are set to now, so that a cleaner deleting old files never
    finds them old."""
    monkeypatch.setattr(socket_folders, "KEEP_INTERVAL", 0.05)
    async with running(tmp_path, "spawner", logger=None) as (host, waiter):
        folders = listener_folders(host)
        for folder in folders:
            shutil.rmtree(folder)
        await waiter.wait_for("isoplug.host", "were deleted")
        assert listener_folders(host) == folders
        child = await host.call("spawner", "python_child")
        record = await waiter.wait_for(
            "plugin.spawner.spawner.child", f"from a python child {child}"
        )
        assert record.process == child
        for folder in folders:
            os.utime(folder, (0, 0))
        await eventually(lambda: all(os.stat(folder).st_mtime > 0 for folder in folders))


ISOPLUG_LINK = """
import json, os, shutil, stat
from isoplug.host.isoplug_link import isoplug_only_folder, renew_if_lost

first = isoplug_only_folder()
assert renew_if_lost() is None
shutil.rmtree(first)
lost, second = renew_if_lost()
facts = {
    "first": first, "lost": lost, "second": second,
    "mode": stat.S_IMODE(os.stat(second).st_mode),
    "link": os.path.realpath(os.path.join(second, "isoplug")),
    "again": isoplug_only_folder(),
}
shutil.rmtree(second)
os.mkdir(second, 0o755)  # made again by someone else: a fresh folder instead
lost, third = renew_if_lost()
facts.update(taken=lost, third=third, third_mode=stat.S_IMODE(os.stat(third).st_mode))
os.rmdir(second)
shutil.rmtree(third)  # deleted again: its exit finds it gone
print(json.dumps(facts))
"""


def test_the_isoplug_link_deleted_is_made_again_and_its_exit_says_nothing(
    tmp_path: Path,
) -> None:
    """The folder that runners with an interpreter of their own import isoplug from, deleted,
    is made again at its path (0700, the link to the host's isoplug), where the runners running
    import from; made again there by someone else, a fresh folder is made instead. At the exit
    of a process whose folder is gone, nothing is said (it used to warn that it could not
    remove it)."""
    import isoplug

    result = subprocess.run(
        [sys.executable, "-c", ISOPLUG_LINK],
        check=False,
        capture_output=True,
        text=True,
        env=child_env(TMPDIR=str(tmp_path)),
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    facts = json.loads(result.stdout)
    assert facts["lost"] == f"its folder {facts['first']} was deleted"
    assert facts["second"] == facts["first"] and facts["again"] == facts["second"]
    assert Path(facts["second"]).parent == tmp_path and facts["mode"] == 0o700
    assert "made again by someone else" in facts["taken"]
    assert facts["third"] != facts["second"] and Path(facts["third"]).parent == tmp_path
    assert facts["third_mode"] == 0o700
    assert facts["link"] == str(Path(isoplug.__file__).resolve().parent)
    assert list(tmp_path.iterdir()) == []
