"""``isoplug run --reload --config FILE``: the file is read once, at start, and said to be; a
table naming no plugin is reported as the file's, not as the API's ``plugin_config``. Real
``isoplug`` subprocesses."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.plugins_fixtures import plugins_dir
from tests.test_cli_exits import cli


async def test_run_with_reload_says_the_config_file_is_read_once_and_names_it(
    tmp_path: Path,
) -> None:
    pytest.importorskip("watchfiles")
    directory = plugins_dir(tmp_path, "echo")
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("[ecoh]\nx = 1\n")
    async with cli("run", "--reload", "--config", str(overrides), str(directory)) as run:
        await run.until(r"reload: watching")
        run.process.send_signal(signal.SIGINT)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert f"--config {overrides} is read once, at start: --reload does not watch it" in output
    assert (
        f"--config {overrides} names plugins not found: ecoh; kept for a plugin folder with "
        "that id made later"
    ) in output
    assert "plugin_config" not in output + errors
