"""What a plugin author's failing test says, with real runners: a ``setup()`` that raises fails
the harness's start at its first failure, with its traceback (``retry_start=True`` gives the
production crash loop); and pytest's report of a failing call shows the test's line and the
plugin's error, not isoplug's own source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug import PluginFailed, PluginState
from isoplug.testing import PluginHarness, watching
from tests.processes import child_env

#: Its setup() raises at its first start only (it leaves a file saying it tried), or always.
PLUGIN = """\
from pathlib import Path

import isoplug


class Flaky(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        tried = Path(__file__).with_name("tried")
        if not tried.exists() or {always}:
            tried.touch()
            raise RuntimeError("database unreachable")

    @isoplug.method
    async def greet(self, name: str) -> str:
        raise ValueError(f"no greeting for {{name}}")
"""


def flaky_plugin(tmp_path: Path, plugin_id: str = "flaky", *, always: bool = False) -> Path:
    folder = tmp_path / plugin_id
    folder.mkdir()
    # The default [restart] policy but a short backoff: its retry is not what is tested.
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}:Flaky"\n'
        "[restart]\nbackoff_initial = 0.05\nbackoff_max = 0.1\n"
    )
    (folder / f"{plugin_id}.py").write_text(PLUGIN.format(always=always))
    return folder


async def test_a_setup_that_raises_fails_the_start_at_its_first_failure(tmp_path: Path) -> None:
    """It used to go through the plugin's whole crash loop first (six starts, about 16 s with
    the default policy) in every test that started it."""
    folder = flaky_plugin(tmp_path)
    with watching("isoplug.host") as host_records, pytest.raises(PluginFailed) as raised:
        async with PluginHarness(folder):
            pass
    assert list(raised.value.failures) == ["flaky"]
    failure = raised.value.failures["flaky"]
    assert failure.startswith("plugin 'flaky': setup() raised RuntimeError: database unreachable")
    # The traceback, as the runner reported it, names the plugin's line.
    assert f'File "{folder.resolve() / "flaky.py"}", line 11, in setup' in failure, failure
    assert "not restarted: the harness fails a start at its first failure" in failure
    assert len(host_records.select(text="starting runner flaky")) == 1, host_records.messages()


async def test_retry_start_restarts_a_failed_start_as_the_restart_policy_says(
    tmp_path: Path,
) -> None:
    async with PluginHarness(flaky_plugin(tmp_path), retry_start=True) as flaky:
        info = flaky.info()
    assert info.state is PluginState.READY and info.restarts == 1


#: A plugin author's test module: a call that fails, a record that never comes, a plugin that
#: cannot start, through the isoplug_host fixture, as `isoplug new` writes them.
_AUTHOR_TESTS = """\
from pathlib import Path

PLUGIN = Path(__file__).parent / "flaky"


def test_call(isoplug_host) -> None:
    plugin = isoplug_host(PLUGIN)
    assert plugin.call("greet", name="Ada") == "Hello, Ada!"  # the call line


def test_record(isoplug_host) -> None:
    plugin = isoplug_host(PLUGIN)
    plugin.wait_for_record(plugin="flaky", text="greeting Bob", timeout=0.1)  # the wait line


def test_start(isoplug_host) -> None:
    isoplug_host(PLUGIN.with_name("broken"))  # the start line
"""


def test_a_failing_tests_report_shows_its_line_and_the_error_not_isoplugs_source(
    tmp_path: Path,
) -> None:
    """The report of a failing call was about 140 lines, most of them isoplug's own source
    (call_runner's body and docstring, the harness, concurrent.futures) before the plugin's
    error."""
    (flaky_plugin(tmp_path) / "tried").touch()  # it starts
    flaky_plugin(tmp_path, "broken", always=True)
    (tmp_path / "test_author.py").write_text(_AUTHOR_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--show-capture=no"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the test module is found there
        env=child_env(),
        timeout=120,
    )
    report = result.stdout
    assert "3 failed" in report, report + result.stderr
    lines = report.splitlines()
    for marker in ("# the call line", "# the wait line", "# the start line"):
        assert any(line.startswith(">") and marker in line for line in lines), report
    for error in (
        "E       isoplug.errors.RemoteError: 'flaky.greet' failed on the remote side: "
        "builtins.ValueError: no greeting for Ada",
        "E       isoplug.errors.WaitTimeout: no record with plugin='flaky', "
        "text='greeting Bob' within 0.1 s",
        "E       isoplug.errors.PluginFailed: 1 plugin failed: broken",
    ):
        assert error in report, report
    own = f"{os.sep}isoplug{os.sep}"
    shown = [line for line in lines if own in line or "concurrent" in line]
    assert not shown, report
    # Each failure: its header, the test's source down to the failing line, the error.
    failures = report.split("= FAILURES =")[1].split("short test summary")[0]
    assert len(failures.splitlines()) < 70, report
