"""Folders the host's user may not read, as an operator meets them running isoplug as a
service user: a plugin folder is skipped with an ERROR naming it, the user and the ``chmod``
that would let it in, and the other plugins run; an unusable plugins folder is a clear
error (code 2, no traceback) in every command and from the library. Real ``isoplug``
subprocesses, run as a user the folders' modes refuse (see :mod:`tests.other_user`)."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.other_user import OtherUser, other_user, reachable_folder
from tests.test_cli_exits import Cli, cli, isoplug, write_plugin

PLAIN = """\
import isoplug

class P(isoplug.Plugin):
    pass
"""


def refused(folder: Path, mode: str) -> str:
    """What every refusal says first: the user, and the folder's mode and owner."""
    return (
        rf"Permission denied: isoplug runs as user \S+ \(uid \d+\), and "
        rf"{re.escape(str(folder))} \(mode {mode}, owner \S+\)"
    )


def as_user(user: OtherUser, cwd: Path) -> dict[str, Any]:
    """The options that run ``isoplug`` (:func:`cli`, :func:`isoplug`) as ``user`` in ``cwd``."""
    return {"python": user.python, "env": user.env, "cwd": cwd, **user.popen_options()}


def run_as(
    user: OtherUser, *arguments: str, cwd: Path
) -> contextlib.AbstractAsyncContextManager[Cli]:
    return cli(*arguments, **as_user(user, cwd))


async def stop(run: Cli) -> tuple[int, str, str]:
    run.process.send_signal(signal.SIGINT)
    return await run.finish()


async def test_a_plugin_folder_the_host_may_not_read_is_skipped_and_the_others_run() -> None:
    user = other_user()
    with reachable_folder(user) as base:
        plugins = base / "plugins"
        write_plugin(plugins, "ok", PLAIN)
        write_plugin(plugins, "secret", PLAIN)
        (plugins / "secret").chmod(0)
        async with run_as(user, "run", str(plugins), cwd=base) as run:
            problem = (await run.until(r"error +(.*secret/plugin\.toml: .*)"))[1]
            await run.until(r"plugin ok: ready")
            code, output, errors = await stop(run)
    assert code == 1, output + errors
    secret = plugins / "secret"
    assert re.match(
        rf"{re.escape(str(secret))}/plugin\.toml: its folder cannot be read: "
        rf"{refused(secret, '0000')} does not grant it read and search permission; give that "
        rf"user read and search permission there \(chmod [ugo]\+rx {re.escape(str(secret))}\)",
        problem,
    ), problem
    assert problem.endswith("or move the folder out of the plugins folder; plugin skipped")
    assert "exit code 1: 1 plugin(s) skipped" in output
    assert "Traceback" not in output + errors


def test_an_unusable_plugins_folder_is_said_so_by_every_command() -> None:
    """Not listable, or behind a folder that may not be searched: code 2, one line on stderr
    naming the folder to change, no traceback; so are `schema` of a plugin folder it may not
    read and `new` in a folder it may not write in (which then makes nothing)."""
    user = other_user()
    with reachable_folder(user) as base:
        plugins = base / "plugins"
        write_plugin(plugins, "ok", PLAIN)
        plugins.chmod(0o111)  # searchable, not listable
        hidden = base / "hidden"
        write_plugin(hidden / "plugins", "ok", PLAIN)
        hidden.chmod(0)
        locked = base / "locked"
        write_plugin(locked, "ok", PLAIN)
        (locked / "ok").chmod(0)
        locked.chmod(0o555)
        cases = [
            (("run", str(plugins)), plugins, "0111", "read and search"),
            (("run", "--reload", str(plugins)), plugins, "0111", "read and search"),
            (("demo", "--plugins-dir", str(plugins)), plugins, "0111", "read and search"),
            (("run", str(hidden / "plugins")), hidden, "0000", "search"),
            (("schema", str(locked / "ok")), locked / "ok", "0000", "search"),
            (("new", str(locked / "weather")), locked, "0555", "write and search"),
        ]
        for arguments, folder, mode, wanted in cases:
            result = isoplug(*arguments, **as_user(user, base))
            said = result.stderr
            assert result.returncode == 2, (arguments, result.stdout, said)
            assert "Traceback" not in said + result.stdout, arguments
            assert re.search(
                rf"{refused(folder, mode)} does not grant it {wanted} permission; give that user "
                rf"{wanted} permission there \(chmod [ugo]\+\w+ {re.escape(str(folder))}\)",
                said,
            ), (arguments, said)
        assert not (locked / "weather").exists()


def test_a_host_from_the_library_raises_permission_error_saying_why() -> None:
    user = other_user()
    script = (
        "import asyncio, sys, isoplug\n"
        "async def main():\n"
        "    try:\n"
        "        async with isoplug.Host(sys.argv[1]):\n"
        "            pass\n"
        "    except PermissionError as exc:\n"
        "        print(f'PermissionError: {exc}')\n"
        "asyncio.run(main())\n"
    )
    with reachable_folder(user) as base:
        plugins = base / "plugins"
        write_plugin(plugins, "ok", PLAIN)
        plugins.chmod(0o111)
        said = subprocess.run(
            [user.python, "-c", script, str(plugins)],
            env=user.env,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **user.popen_options(),
        )
    assert said.returncode == 0, said.stderr
    assert re.fullmatch(
        rf"PermissionError: plugins directory {re.escape(str(plugins))} cannot be read: "
        rf"{refused(plugins, '0111')} .*\n",
        said.stdout,
    ), said.stdout


async def test_under_reload_a_folder_made_readable_starts_and_its_edits_are_seen() -> None:
    """An unreadable folder neither ends the watch of the others nor stays unwatched once
    it may be read: it starts then, and a later edit in it restarts it."""
    pytest.importorskip("watchfiles")
    user = other_user()
    with reachable_folder(user) as base:
        plugins = base / "plugins"
        write_plugin(plugins, "ok", PLAIN)
        write_plugin(plugins, "secret", PLAIN)
        secret = plugins / "secret"
        secret.chmod(0)
        async with run_as(user, "run", "--reload", str(plugins), cwd=base) as run:
            await run.until(r"secret/plugin\.toml: its folder cannot be read")
            await run.until(r"reload: watching")
            await run.until(r"plugin ok: ready")
            secret.chmod(0o755)
            await run.until(r"plugin secret: ready")
            with (secret / "secret_plugin.py").open("a") as code:
                code.write("# edited\n")
            await run.until(r"secret_plugin\.py changed; restarting runner secret")
            await run.until(r"plugin secret: ready", count=2)
            code_, output, errors = await stop(run)
    assert "watching the plugins folder stopped" not in output
    assert "Traceback" not in output + errors
    # Skipped at the start, fixed since: a session of edits ends well.
    assert code_ == 0, output + errors
