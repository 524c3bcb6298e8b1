"""Hot reload compiles a changed file with the interpreter that will run it: a plugin on an
interpreter of its own is judged by that interpreter, with its runner's environment, in a
helper process; a check that cannot run restarts the plugin all the same. Real hosts, real
runners, real interpreters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import eventually, watching
from tests.other_pythons import other_python
from tests.plugins_fixtures import reloading

pytest.importorskip("watchfiles")

SOURCE = """
import sys
import isoplug

V = 1

class Plugin(isoplug.Plugin):
    @isoplug.method
    def version(self) -> list[object]:
        return [V, sys.version_info[:2]]
"""

#: Variable naming a Python >= 3.12 that can run a runner (msgspec installed), for the test of
#: 3.12-only syntax when none is found on PATH or under pyenv.
NEWER_PYTHON_VARIABLE = "ISOPLUG_TEST_NEWER_PYTHON"


def write_plugin(directory: Path, python: str, extra: str = "") -> Path:
    folder = directory / "own"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "own"\nversion = "1"\nentry = "own_plugin:Plugin"\npython = {python!r}\n{extra}\n'
    )
    module = folder / "own_plugin.py"
    module.write_text(SOURCE)
    return module


async def restarted(host: Host, pid: int | None) -> None:
    await eventually(
        lambda: (
            host.plugin("own").pid not in (None, pid) and host.plugin("own").state.value == "ready"
        )
    )


async def test_a_file_is_compiled_as_the_plugins_interpreter_and_environment_compile_it(
    tmp_path: Path,
) -> None:
    """Its runner's environment makes warnings errors, so an invalid escape sequence is a
    SyntaxError there (not on the host, where it is a warning): the save keeps the runner on
    the code it loaded, saying where and why, instead of restarting it into an import that
    fails. The fix restarts it."""
    module = write_plugin(
        tmp_path / "plugins",
        str(Path(sys.executable).absolute()),
        '[environment]\nPYTHONWARNINGS = "error::DeprecationWarning,error::SyntaxWarning"',
    )
    async with reloading(tmp_path / "plugins") as host:
        pid = host.plugin("own").pid
        with watching("isoplug.host") as said:
            module.write_text(SOURCE + 'PATTERN = "\\d+"\n')
            record = await said.wait_for_record(text="it keeps running the code it loaded")
        message = record.getMessage()
        assert "own_plugin.py, line " in message
        assert "SyntaxError: invalid escape sequence" in message
        assert host.plugin("own").pid == pid
        assert (await host.call("own", "version"))[0] == 1
        module.write_text(SOURCE.replace("V = 1", "V = 2") + 'PATTERN = r"\\d+"\n')
        await restarted(host, pid)
        assert (await host.call("own", "version"))[0] == 2


def newer_python() -> str | None:
    """A Python >= 3.12 that can run a runner (imports msgspec), or None."""
    return other_python((3, 12), NEWER_PYTHON_VARIABLE)


async def test_syntax_of_a_newer_python_reloads_a_plugin_that_runs_on_it(tmp_path: Path) -> None:
    """A plugin on Python 3.12 saved with 3.12-only syntax (PEP 701's f-strings), which the
    host's 3.11 cannot compile: it restarts into the new code."""
    if sys.version_info >= (3, 12):
        pytest.skip("the host compiles 3.12 syntax itself")
    python = newer_python()
    if python is None:
        pytest.skip(f"no Python >= 3.12 with msgspec (name one in {NEWER_PYTHON_VARIABLE})")
    module = write_plugin(tmp_path / "plugins", python)
    async with reloading(tmp_path / "plugins") as host:
        pid = host.plugin("own").pid
        module.write_text(SOURCE.replace("V = 1", 'D = {"k": 2}\nV = f"{D["k"]}"'))
        await restarted(host, pid)
        assert (await host.call("own", "version"))[0] == "2"


async def test_a_check_that_cannot_run_restarts_the_plugin_all_the_same(tmp_path: Path) -> None:
    """The plugin's interpreter (a wrapper) fails the compile check without an answer: the
    check cannot say, so the save restarts the plugin, with a warning."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$2" in *isoplug-compile*) echo "no compiling here" >&2; exit 3;; esac\n'
        f'exec {Path(sys.executable).absolute()} "$@"\n'
    )
    wrapper.chmod(0o755)
    module = write_plugin(tmp_path / "plugins", str(wrapper))
    async with reloading(tmp_path / "plugins") as host:
        pid = host.plugin("own").pid
        with watching("isoplug.host") as said:
            module.write_text(SOURCE.replace("V = 1", "V = 2"))
            record = await said.wait_for_record(text="restarting anyway")
            await restarted(host, pid)
        assert "without saying whether the changed files compile" in record.getMessage()
        assert (await host.call("own", "version"))[0] == 2
