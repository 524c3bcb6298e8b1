"""`isoplug demo` and `isoplug schema` where the check of the command line found them wrong:
a demo whose plugins all failed, one plugin's folder as --plugins-dir, Ctrl-C while a schema's
plugin is imported."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from isoplug.testing import eventually
from tests.plugins_fixtures import FIXTURES, plugins_dir
from tests.test_cli_exits import cli, isoplug, write_plugin


def test_demo_whose_plugins_all_failed_exits_1_without_a_summary(tmp_path: Path) -> None:
    result = isoplug(
        "demo", "--plugins-dir", str(plugins_dir(tmp_path, "import_raises")), "--duration", "1"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "isoplug demo: no plugin was ready (1): import_raises: " in result.stderr
    assert "What you saw" not in result.stdout


def test_demo_takes_one_plugins_folder_as_run_does() -> None:
    result = isoplug("demo", "--plugins-dir", str(FIXTURES / "echo"), "--duration", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 plugin(s) ready" in result.stdout and "What you saw" in result.stdout


def test_demo_says_a_missing_folder_in_runs_words(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = isoplug("demo", "--plugins-dir", str(missing))
    assert result.returncode == 2
    assert f"isoplug demo: plugins directory {missing} does not exist" in result.stderr


#: A plugin whose import says it began, then takes all the time there is.
SLOW_IMPORT = """
    import time
    from pathlib import Path

    Path(__file__).with_name("importing").touch()
    time.sleep(120)

    import isoplug

    class P(isoplug.Plugin):
        pass
"""


@pytest.mark.parametrize("started_ignoring", [False, True], ids=["default", "started-ignoring"])
async def test_ctrl_c_during_schema_exits_130_without_a_traceback(
    tmp_path: Path, started_ignoring: bool
) -> None:
    """Also when a script's shell started it with SIGINT ignored (a background command)."""
    write_plugin(tmp_path, "slow", SLOW_IMPORT)
    ignoring = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if started_ignoring else None
    async with cli("schema", str(tmp_path / "slow"), preexec_fn=ignoring) as schema:
        await eventually((tmp_path / "slow" / "importing").exists, timeout=60)
        schema.process.send_signal(signal.SIGINT)
        code, output, errors = await schema.finish()
    assert code == 130, errors
    assert "Traceback" not in errors and output == "", errors
