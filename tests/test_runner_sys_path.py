"""A runner's ``sys.path``: its plugin's folders, ``PYTHONPATH`` and the interpreter's own;
never the host's working directory (docs/plugins.md, "The runner's sys.path")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import isoplug
from isoplug import Host
from isoplug.host.manifest import load_manifest
from isoplug.host.schema import plugin_toml_schema
from tests.plugins_fixtures import FAST

PEEK = """\
import sys

import isoplug


class Peek(isoplug.Plugin):
    @isoplug.method
    def path(self) -> list[str]:
        return list(sys.path)
"""


def peek_plugin(plugins: Path, start: str) -> Path:
    folder = plugins / "peek"
    folder.mkdir(parents=True)
    (folder / "peek_plugin.py").write_text(PEEK)
    (folder / "plugin.toml").write_text(
        f'id = "peek"\nversion = "1"\nentry = "peek_plugin:Peek"\nstart = "{start}"\n'
    )
    return folder


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_the_hosts_working_directory_is_not_on_a_runners_sys_path(
    tmp_path: Path, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    folder = peek_plugin(plugins, start)
    monkeypatch.chdir(plugins)  # as `isoplug run .` in the plugins folder
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        path = await host.call("peek", "path")
    assert path[0] == str(folder.resolve())
    assert str(plugins) not in path and str(plugins.resolve()) not in path and "" not in path
    isoplug_root = str(Path(isoplug.__file__ or "").resolve().parents[1])
    assert isoplug_root in path


def test_a_pythonpath_entry_naming_the_working_directory_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What PYTHONPATH names is wanted, even when it is where the host runs: only the entry
    # `python -m` adds goes. `isoplug schema` imports the plugin as a runner does.
    folder = peek_plugin(tmp_path / "plugins", "spawn")
    (tmp_path / "wanted_helper.py").write_text("")
    (folder / "peek_plugin.py").write_text("import wanted_helper\n" + PEEK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["."]))
    assert plugin_toml_schema(load_manifest(folder))["$ref"]
