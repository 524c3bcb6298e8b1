"""Where a host makes its private folders when the temporary folder cannot take them: the next
one that can, said once in a WARNING; never the working directory; and with none at all a
:class:`~isoplug.NoTemporaryFolder` naming each folder's reason (``isoplug run``: exit 71).
A dead host's folders are looked for wherever a host may make them. Also: a ``Host`` given one
plugin's folder says so at its start.

The folders out of room are small tmpfs mounts in a private mount namespace (``unshare -m``),
where the machine allows it; elsewhere those tests are skipped."""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from isoplug import Host, NoTemporaryFolder
from isoplug.testing import Records, watching
from tests.plugins_fixtures import FAST, plugins_dir
from tests.processes import child_env
from tests.test_host_temp_cleaner import listener_folders
from tests.test_stale_socket_dirs import dead_owners_folder

#: Run in a private mount namespace: /tmp and /var/tmp small tmpfs mounts, each filled to its
#: last inode once the script's folders are made; /tmp/work a roomy one, the working directory;
#: /tmp/small one with room for a few entries. Then "$@" runs there. $FILL_PLACES, when set,
#: names the folders filled instead.
_FULL_TEMP_FOLDERS = r"""
set -e
# What the new /tmp and /var/tmp would hide of what the test runs (a checkout or a venv that
# lives there, as CI's may): seen through the old ones, bound back into the new ones.
mount -t tmpfs tmpfs /mnt
mkdir /mnt/tmp /mnt/var-tmp
mount --bind /tmp /mnt/tmp
mount --bind /var/tmp /mnt/var-tmp
mount -t tmpfs -o size=1m,nr_inodes=64 tmpfs /tmp
mkdir /tmp/plugins /tmp/work /tmp/small
mount -t tmpfs -o size=1m tmpfs /tmp/work
mount -t tmpfs -o size=64k,nr_inodes=16 tmpfs /tmp/small
mount -t tmpfs -o size=1m,nr_inodes=16 tmpfs /var/tmp
for kept in $KEEP_PATHS; do
    case "$kept" in
        /tmp/*) old="/mnt/tmp/${kept#/tmp/}" ;;
        /var/tmp/*) old="/mnt/var-tmp/${kept#/var/tmp/}" ;;
        *) continue ;;
    esac
    mkdir -p "$kept"
    mount --bind "$old" "$kept"
done
for place in ${FILL_PLACES-/tmp /var/tmp}; do
    i=0; while touch "$place/f$i" 2>/dev/null; do i=$((i+1)); done
done
cd /tmp/work
set +e
"$@"
echo "exit code $?"
echo "left in the working directory: [$(ls -A /tmp/work)]"
"""


_PRIVATE_MOUNTS = ("unshare", "-m", "--propagation", "private")


@functools.cache
def _namespaces_allowed() -> str | None:
    """Why mounts in a private mount namespace cannot be made here (None: they can)."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(
        [*_PRIVATE_MOUNTS, "mount", "-t", "tmpfs", "tmpfs", "/mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


needs_mounts = pytest.mark.skipif(
    _namespaces_allowed() is not None, reason=str(_namespaces_allowed())
)


def with_full_temp_folders(
    *command: str, full: str = "/tmp /var/tmp"
) -> subprocess.CompletedProcess[str]:
    """``command`` run where the folders ``full`` (of /tmp and /var/tmp) have no inode left
    (and there is no TMPDIR), from a roomy working directory."""
    # The checkout and the interpreter's environment, which the mounts must not hide.
    kept = {str(Path(__file__).resolve().parent.parent), sys.prefix}
    environment = child_env(NO_COLOR="1", FILL_PLACES=full, KEEP_PATHS=" ".join(sorted(kept)))
    environment.pop("TMPDIR", None)
    return subprocess.run(
        [*_PRIVATE_MOUNTS, "sh", "-c", _FULL_TEMP_FOLDERS, "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )


def the_warning(records: Records, text: str) -> str:
    """The message of the one record holding ``text``, a WARNING."""
    said = records.select(text=text)
    assert [record.levelno for record in said] == [logging.WARNING], said
    return said[0].getMessage()


_REASONS = (
    "no temporary folder can take isoplug's private folders (its sockets): /tmp: No space "
    "left on device; /var/tmp: No space left on device"
)
_FIX = "free room there, or set TMPDIR to a writable folder with room"


@needs_mounts
def test_isoplug_run_with_no_temporary_folder_says_why_each_refused_and_exits_71() -> None:
    result = with_full_temp_folders(sys.executable, "-m", "isoplug", "run", "/tmp/plugins")
    assert result.stdout.endswith(
        "exit code 71\nleft in the working directory: []\n"  # not made there instead
    ), (result.stdout, result.stderr)
    assert result.stderr.startswith(f"isoplug run: cannot go on: {_REASONS}"), result.stderr
    assert result.stderr.endswith(f"{_FIX}\n"), result.stderr
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr


#: An embedded host where no temporary folder has room, then a listener whose folder a
#: cleaner deleted meanwhile: what each raises.
_EMBEDDED = r"""
import asyncio, errno, os, shutil, isoplug
from isoplug.transport import listen

async def echo(stream):
    await stream.aclose()

async def main():
    try:
        async with isoplug.Host("/tmp/plugins"):
            print("started")
    except isoplug.NoTemporaryFolder as exc:
        print("raised", type(exc).__name__, errno.errorcode[exc.errno], exc.tried[0])
    os.environ["TMPDIR"] = "/tmp/small"
    listener = await listen("unix:", echo)
    shutil.rmtree(os.path.dirname(listener.address.path))
    try:
        for n in range(100):
            open(f"/tmp/small/f{n}", "x").close()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    try:
        await listener.listen_again_if_lost()
    except isoplug.IsoplugError as exc:
        print("again:", exc)
    await listener.aclose()

asyncio.run(main())
"""


@needs_mounts
def test_an_embedded_host_with_no_temporary_folder_raises_no_temporary_folder() -> None:
    """Not FileNotFoundError (what a missing plugins folder raises): an OSError with the
    preferred folder's errno, ENOSPC here. A listener that cannot listen again names its
    socket's path."""
    result = with_full_temp_folders(sys.executable, "-c", _EMBEDDED)
    lines = result.stdout.splitlines()
    assert lines[0] == "raised NoTemporaryFolder ENOSPC ('/tmp', 'No space left on device')", (
        result.stdout,
        result.stderr,
    )
    again = lines[1]
    assert again.startswith("again: cannot listen again on unix:/tmp/small/isoplug-"), again
    assert "/sock (its folder /tmp/small/isoplug-" in again, again
    # No room for its folder again, nor anywhere else: each folder's reason.
    assert (
        "was deleted): no temporary folder can take isoplug's private folders (its sockets): "
        "/tmp/small: No space left on device; /tmp: No space left on device; /var/tmp: No "
        "space left on device"
    ) in again, again


#: A host whose folders in /tmp a cleaner deletes as /tmp runs out of inodes: the plugin
#: restarted then, and where its listeners are.
_FOLDERS_LOST_IN_A_FULL_TMP = r"""
import asyncio, errno, glob, logging, os, shutil, isoplug
from pathlib import Path
from isoplug.testing import watching
from tests.plugins_fixtures import FAST, plugins_dir
from tests.test_host_temp_cleaner import listener_folders

async def main():
    with watching("isoplug") as records:
        async with isoplug.Host(plugins_dir(Path("/tmp/work"), "echo"), config=FAST) as host:
            await host.wait_ready(60)
            for folder in glob.glob("/tmp/isoplug-*"):
                shutil.rmtree(folder)
            try:
                for n in range(1000):
                    open(f"/tmp/f{n}", "x").close()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
            # Room for a folder, and none for a file in it.
            os.unlink("/tmp/f0")
            await host.restart("echo")
            await host.wait_ready(60)
            print("called:", await host.call("echo", "echo", "hi"))
            print("listening in:", *sorted({f.rsplit("/", 1)[0] for f in listener_folders(host)}))
    for record in records.select(level=logging.WARNING):
        print("WARNING", record.getMessage())

asyncio.run(main())
"""


@needs_mounts
def test_folders_lost_in_a_full_tmp_are_made_again_in_the_next_temporary_folder() -> None:
    """Made again at the same path is impossible (one inode: the folder, and no file in it;
    nor in a fresh folder there): the listeners go to /var/tmp, the restarted runner is given
    their new addresses, and the WARNING that says /var/tmp is true."""
    result = with_full_temp_folders(sys.executable, "-c", _FOLDERS_LOST_IN_A_FULL_TMP, full="")
    lines = result.stdout.splitlines()
    # The first to move frees the inodes of its lost lock and socket (still open until then),
    # which may let the other be made again at its path in /tmp.
    assert lines[0] == "called: hi", (result.stdout, result.stderr)
    assert lines[1].startswith("listening in:") and "/var/tmp" in lines[1], lines[1]
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert any(
        "private folders (its sockets) are made in /var/tmp: /tmp: No space left on device" in line
        for line in warnings
    ), warnings
    assert not any("cannot listen again" in line for line in warnings), warnings


async def test_a_temporary_folder_that_cannot_take_folders_is_passed_over_once_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TMPDIR that is a file (as good as full, and the same whoever runs the test): the
    folders go to /tmp, and one WARNING says where and why."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TMPDIR", str(not_a_folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    with watching("isoplug") as records:
        async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
            await host.wait_ready(60)
            assert await host.call("echo", "echo", "hi") == "hi"
            assert all(folder.startswith("/tmp/isoplug-") for folder in listener_folders(host))
    assert the_warning(records, "private folders") == (
        f"isoplug's private folders (its sockets) are made in /tmp: {not_a_folder}: Not a "
        "directory; a dead host's are looked for there too (to keep them in "
        f"{not_a_folder}: make it a folder this user can write in, or set TMPDIR to one)"
    )


@pytest.mark.skipif(not os.access("/var/tmp", os.W_OK), reason="no writable /var/tmp")
async def test_a_dead_hosts_folder_in_var_tmp_goes_at_the_next_start(tmp_path: Path) -> None:
    """Where a host killed with kill -9 made its folders when /tmp was full."""
    left = dead_owners_folder(Path("/var/tmp"), other_namespace=False, lock=True)
    try:
        async with Host(plugins_dir(tmp_path), config=FAST):
            assert not left.exists()
    finally:
        shutil.rmtree(left, ignore_errors=True)


async def test_a_host_given_one_plugins_folder_says_to_pass_its_parent(tmp_path: Path) -> None:
    echo = plugins_dir(tmp_path, "echo") / "echo"
    with watching("isoplug") as records:
        async with Host(echo, config=FAST) as host:
            assert host.plugins() == []
    assert the_warning(records, "one plugin's folder") == (
        f"plugins folder {echo} is one plugin's folder (it holds plugin.toml itself), so no "
        "plugin runs: a Host runs a folder of plugin folders; pass its parent folder, "
        f"{echo.parent}, to run the plugins in it (isoplug run and the test harness take "
        "either)"
    )


def test_no_temporary_folder_is_an_oserror_with_its_errno_not_a_missing_folder() -> None:
    error = NoTemporaryFolder([("/tmp", "No space left on device")], errno.ENOSPC)
    assert isinstance(error, OSError) and not isinstance(error, FileNotFoundError)
    assert error.errno == errno.ENOSPC and not str(error).startswith("[Errno")
