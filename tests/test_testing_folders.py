"""The folder a test gives the harness: one that holds no plugin is said at the start, naming
it (and the folder likely meant); a plugin's folder with an invalid manifest is named by its
own path in the host's record too, not by a temporary folder gone after the test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from isoplug import PluginFailed
from isoplug.testing import BlockingHarness, PluginHarness, watching
from tests.test_testing_traps import write_plugin


async def test_a_folder_without_plugins_fails_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as raised:
        async with PluginHarness(tmp_path / "empty"):
            pass
    message = str(raised.value)
    assert message.startswith(f"no plugin in {tmp_path / 'empty'}: "), message
    assert "neither it nor its folders hold a plugin.toml" in message
    assert "deeper" not in message


def test_a_folder_above_the_plugins_folder_points_at_it(tmp_path: Path) -> None:
    """A test run from the wrong folder (the plugins folder one level down)."""
    write_plugin(tmp_path / "plugins")
    with pytest.raises(FileNotFoundError) as raised, BlockingHarness(tmp_path):
        pass
    expected = (
        f"{tmp_path / 'plugins' / 'traps' / 'plugin.toml'} is one level deeper: "
        f"did you mean {tmp_path / 'plugins'}?"
    )
    assert str(raised.value).endswith(expected), raised.value


async def test_an_invalid_manifest_is_logged_at_the_plugins_own_path(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path, "captabilities = []\n")
    with watching("isoplug.host") as records:
        with pytest.raises(PluginFailed, match="captabilities") as raised:
            async with PluginHarness(folder):
                pass
        [record] = records.select(text="captabilities")
    where = re.escape(f"{folder}/plugin.toml")
    assert re.match(rf"{where}: unknown field 'captabilities'", record.getMessage()), record
    assert f"{folder}/plugin.toml" in str(raised.value)
