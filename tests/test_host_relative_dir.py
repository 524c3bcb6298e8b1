"""``Host("plugins")``, a relative plugins folder: taken from the working directory when the
host is made, once. An application that changes its working directory later (``os.chdir()``)
still has its plugins restarted, reloaded and reported from that folder. Real hosts, real
runners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins


def touch_code(path: Path) -> None:
    with path.open("a") as source:
        source.write("\n# edited\n")


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_relative_plugins_folder_stays_the_one_the_host_was_made_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    pytest.importorskip("watchfiles")
    plugins = copy_plugins(tmp_path / "app", "echo")
    manifest = plugins / "echo" / "plugin.toml"
    manifest.write_text(manifest.read_text().replace("[restart]", f'start = "{start}"\n[restart]'))
    (plugins / "broken").mkdir()
    (plugins / "broken" / "plugin.toml").write_text('id = "broken"\n')
    (tmp_path / "elsewhere" / "plugins").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "app")
    with watching("isoplug.host") as said:
        host = Host("plugins", config=FAST, reload=True)
        assert host.plugins_dir == plugins
        async with host:
            await host.wait_ready(20)
            assert host.reloader is not None
            await eventually(host.reloader.watching.is_set)
            # Messages name the folder as the host took it.
            assert said.select(text=f"reload: watching {plugins} for changes")
            assert [p.split(":")[0] for p in host.problems] == [str(plugins / "broken/plugin.toml")]
            # An empty folder of the same name where the application goes next.
            os.chdir(tmp_path / "elsewhere")
            await host.restart("echo")
            assert await host.call("echo", "echo", 1) == 1
            pid = host.plugin("echo").pid
            touch_code(plugins / "echo" / "echo_plugin.py")
            await eventually(
                lambda: (
                    host.plugin("echo").pid not in (None, pid)
                    and host.plugin("echo").state.value == "ready"
                )
            )
            assert await host.call("echo", "echo", 2) == 2


def test_a_relative_plugins_folder_under_a_deleted_working_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError, match="working directory, which is gone") as raised:
        Host("plugins")
    assert "give an absolute path" in str(raised.value)
