"""`isoplug run` started as daemons, scripts and odd systems start it: standard streams closed,
a console encoding that is not UTF-8 or a stdout that cannot be written, SIGHUP ignored
(``nohup``), paths that are not UTF-8 or not ASCII under a C locale, a working directory that
was deleted."""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug.cli.running import plugin_config_file
from isoplug.testing import eventually
from tests.process_memory import blocked_signals
from tests.processes import child_env
from tests.test_cli_exits import write_plugin

#: Says a line the console encodings lack, then that it is ready (a file beside its code:
#: readable whatever stdout is), and imports a module of its sys_path folder.
MARKED = """
    import os

    import isoplug
    import helper


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            print(f"{helper.WORD} \\u2603 caf\\xe9", flush=True)
            with open(os.path.join(os.path.dirname(__file__), "ready"), "w", encoding="utf-8"):
                pass
"""


def marked_plugin(plugins: Path) -> Path:
    """The plugin ``marked`` in ``plugins``; the file its setup makes once it runs."""
    write_plugin(plugins, "marked", MARKED, 'sys_path = ["lib"]\n')
    (plugins / "marked" / "lib").mkdir()
    (plugins / "marked" / "lib" / "helper.py").write_text('WORD = "snowman"\n', encoding="utf-8")
    return plugins / "marked" / "ready"


@asynccontextmanager
async def isoplug_run(
    plugins: Path,
    *,
    shell: str = "",
    cwd: Path | None = None,
    stdout: int = asyncio.subprocess.PIPE,
    preexec_fn: Callable[[], object] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``isoplug run PLUGINS`` in a subprocess, started by ``sh`` with ``shell`` after the
    command (``>&-``, ``2>&-``) and ``cd CWD && rmdir CWD`` before it when ``cwd`` is given;
    its stderr piped (unless closed), killed if the test left it running."""
    deleting = 'cd "$2" && rmdir "$2" && ' if cwd is not None else ""
    script = f'{deleting}exec "$0" -m isoplug run "$1" {shell}'
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        script,
        sys.executable,
        plugins,
        *([cwd] if cwd is not None else []),
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(NO_COLOR="1", **(env or {})),
        preexec_fn=preexec_fn,
    )
    try:
        async with asyncio.timeout(60):
            yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def until_line(process: asyncio.subprocess.Process, pattern: bytes) -> bytes:
    """The output up to and with the first line matching ``pattern``."""
    assert process.stdout is not None
    seen = b""
    while not re.search(pattern, seen):
        line = await process.stdout.readline()
        assert line, seen.decode(errors="replace")
        seen += line
    return seen


# -- standard streams closed -------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_run_with_stdout_closed_stops_cleanly(tmp_path: Path, loop: str) -> None:
    """`isoplug run DIR >&-`: no descriptor of isoplug's or of its event loop lands on fd 1
    (uvloop aborted at exit on one), and sys.stdout being None fails nothing."""
    ready = marked_plugin(tmp_path / "plugins")
    async with isoplug_run(
        tmp_path / "plugins", shell=">&-", env={"ISOPLUG_EVENT_LOOP": loop}
    ) as run:
        await eventually(ready.exists, 30)
        run.send_signal(signal.SIGINT)
        _, errors = await run.communicate()
    assert run.returncode == 0, errors.decode()
    assert errors == b""


async def test_run_with_stderr_closed_stops_cleanly(tmp_path: Path) -> None:
    ready = marked_plugin(tmp_path / "plugins")
    async with isoplug_run(tmp_path / "plugins", shell="2>&-") as run:
        await eventually(ready.exists, 30)
        run.send_signal(signal.SIGINT)
        output, _ = await run.communicate()
    assert run.returncode == 0, output.decode()
    assert b"all plugins stopped" in output


# -- the console ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({"PYTHONIOENCODING": "latin-1"}, b"snowman \\u2603 caf\xe9"),
        ({"LC_ALL": "C", "PYTHONUTF8": "0"}, b"snowman \\u2603 caf\\xe9"),
    ],
    ids=["latin-1", "C-locale"],
)
async def test_the_console_escapes_what_its_encoding_lacks(
    tmp_path: Path, env: dict[str, str], shown: bytes
) -> None:
    """A line with a character the console's encoding lacks is shown with escapes, not
    dropped with an error about the handler."""
    marked_plugin(tmp_path / "plugins")
    async with isoplug_run(tmp_path / "plugins", env=env) as run:
        seen = await until_line(run, rb"ready: runner marked")
        run.send_signal(signal.SIGINT)
        rest, _ = await run.communicate()
    assert run.returncode == 0
    output = seen + rest
    assert re.search(rb"marked +stdout +" + re.escape(shown) + rb"\n", output), output
    assert b"ConsoleHandler" not in output


async def test_an_unwritable_stdout_is_said_once_and_ends_the_run(tmp_path: Path) -> None:
    """`isoplug run DIR > /dev/full`: one line on stderr says so (not a `--- Logging error ---`
    per record), the plugins are stopped, and the exit code is 74 (EX_IOERR)."""
    marked_plugin(tmp_path / "plugins")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        async with isoplug_run(tmp_path / "plugins", stdout=full) as run:
            _, errors = await run.communicate()
    finally:
        os.close(full)
    said = errors.decode()
    assert run.returncode == 74, said
    assert said == (
        "isoplug: the console on stdout cannot be written ([Errno 28] No space left on "
        "device): nothing more is shown there; stopping every plugin\n"
    )


# -- signals -----------------------------------------------------------------------------------


def ignoring(signum: signal.Signals) -> Callable[[], object]:
    """A child's start with ``signum`` ignored, as ``nohup`` (SIGHUP) or a script's shell (a
    background command's SIGINT) start it."""
    return lambda: signal.signal(signum, signal.SIG_IGN)


async def test_a_sighup_ignored_at_start_stays_ignored(tmp_path: Path) -> None:
    """Under `nohup`, a SIGHUP (the terminal closing) stops nothing; SIGTERM still stops."""
    marked_plugin(tmp_path / "plugins")
    async with isoplug_run(tmp_path / "plugins", preexec_fn=ignoring(signal.SIGHUP)) as run:
        seen = await until_line(run, rb"ready: runner marked")
        # An ignored signal is discarded when sent: the SIGTERM after it is the first one.
        run.send_signal(signal.SIGHUP)
        run.send_signal(signal.SIGTERM)
        rest, _ = await run.communicate()
    output = (seen + rest).decode()
    assert run.returncode == 0, output
    assert "SIGHUP" not in output
    assert "SIGTERM: stopping every plugin" in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
async def test_sigint_stops_the_run_even_when_ignored_at_start(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """`isoplug run DIR &` in a script starts with SIGINT and SIGQUIT ignored, not at the
    user's asking: `kill -INT` (or `-QUIT`) still stops it."""
    marked_plugin(tmp_path / "plugins")
    async with isoplug_run(tmp_path / "plugins", preexec_fn=ignoring(signum)) as run:
        seen = await until_line(run, rb"ready: runner marked")
        run.send_signal(signum)
        rest, _ = await run.communicate()
    output = (seen + rest).decode()
    assert run.returncode == 0, output
    assert f"{signum.name}: stopping every plugin" in output


def blocking(*signums: signal.Signals) -> Callable[[], object]:
    """A child's start with ``signums`` blocked in its signal mask, as a parent leaves them
    that blocked them in the thread that starts it (the mask survives ``exec``)."""
    return lambda: signal.pthread_sigmask(signal.SIG_BLOCK, signums)


async def test_stop_signals_blocked_at_start_are_unblocked(tmp_path: Path) -> None:
    """Started with SIGINT, SIGTERM and SIGHUP blocked: they are unblocked and said (at INFO),
    SIGTERM stops the run cleanly, and the runner does not inherit the blocked mask."""
    stop = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    marked_plugin(tmp_path / "plugins")
    async with isoplug_run(tmp_path / "plugins", preexec_fn=blocking(*stop)) as run:
        seen = await until_line(run, rb"ready: runner marked \(pid \d+\)")
        runner = int(re.findall(rb"ready: runner marked \(pid (\d+)\)", seen)[0])
        assert not blocked_signals(runner) & set(stop)
        run.send_signal(signal.SIGTERM)
        # Still blocked, the signal would stay pending, and the run go on.
        rest, _ = await asyncio.wait_for(run.communicate(), 30)
    output = (seen + rest).decode()
    assert run.returncode == 0, output
    assert (
        "stop signals blocked in the signal mask isoplug started with (its parent blocked "
        "them): SIGINT, SIGTERM, SIGHUP; unblocked" in output
    )
    assert "SIGTERM: stopping every plugin" in output


# -- paths and the working directory -----------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "env"),
    [
        (b"caf\xe9", {}),
        ("plügins ☃".encode(), {"LC_ALL": "C", "PYTHONUTF8": "0"}),
    ],
    ids=["latin-1-name", "utf-8-name-in-C-locale"],
)
async def test_a_plugins_path_that_is_not_text_in_the_locale_runs(
    tmp_path: Path, folder: bytes, env: dict[str, str]
) -> None:
    """A plugins folder, sys_path folder and $TMPDIR (the host's sockets) whose path is not
    UTF-8, or not ASCII under a C locale: the runner imports the plugin and its sys_path
    module from there."""
    place = tmp_path / os.fsdecode(folder)
    ready = marked_plugin(place / "plugins")
    (place / "tmp").mkdir()
    async with isoplug_run(place / "plugins", env={"TMPDIR": str(place / "tmp"), **env}) as run:
        seen = await until_line(run, rb"ready: runner marked")
        run.send_signal(signal.SIGINT)
        rest, _ = await run.communicate()
    assert run.returncode == 0, (seen + rest).decode(errors="replace")
    assert ready.exists()


async def test_a_deleted_working_directory_fails_every_plugin_at_once(tmp_path: Path) -> None:
    """No runner can start in a deleted folder, however often tried: each plugin fails at once
    (no restarts), saying why, and the run ends."""
    marked_plugin(tmp_path / "plugins")
    (tmp_path / "gone").mkdir()
    async with isoplug_run(tmp_path / "plugins", cwd=tmp_path / "gone") as run:
        output, errors = await run.communicate()
    text = output.decode() + errors.decode()
    assert run.returncode == 1, text
    assert (
        "plugin marked: failed: runner marked did not start; the host's working directory is "
        "gone (deleted), and a runner starts in it: start the host in a folder that exists, "
        "or os.chdir() to one, then restart the plugin; not retried"
    ) in text
    assert "restart #" not in text


def test_a_utf8_folder_name_under_a_c_locale_is_said_to_need_a_utf8_locale(
    tmp_path: Path,
) -> None:
    """Under LC_ALL=C (without Python's UTF-8 mode) a UTF-8 folder name cannot be shown: the
    locale, not the name, is what to change."""
    write_plugin(tmp_path / "plugins", "plügin", MARKED)
    result = subprocess.run(
        [sys.executable, "-m", "isoplug", "run", str(tmp_path / "plugins")],
        capture_output=True,
        timeout=60,
        check=False,
        env=child_env(NO_COLOR="1", LC_ALL="C", PYTHONUTF8="0"),
    )
    assert result.returncode == 1
    assert (
        b"the plugin's folder name 'pl\\udcc3\\udcbcgin' holds bytes that are not ascii text "
        b"(0xc3 0xbc, shown as \\udcXX): UTF-8, which the host's locale does not read; run the "
        b"host in a UTF-8 locale (LC_ALL=C.UTF-8, or PYTHONUTF8=1), or rename the folder in "
        b"ASCII; plugin skipped"
    ) in result.stdout


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.toml"
    overrides.write_bytes(codecs.BOM_UTF8 + b'[greeter]\ngreeting = "hi"\n')
    assert plugin_config_file(overrides) == {"greeter": {"greeting": "hi"}}
