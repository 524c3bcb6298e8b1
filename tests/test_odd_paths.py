"""Plugin folders and temporary folders whose paths are odd: past the system's PATH_MAX, with
a line break or a tab in a name, long in bytes but short in characters (CJK); and manifest
values the host must not echo. Each runs a real host over real folders: one odd folder is
skipped with an ERROR naming it and what to do, and the other plugins run."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.registry import discover
from isoplug.host.reload_plan import plugin_folders
from isoplug.testing import Records, watching
from isoplug.transport.socket_dirs import owner_prefix
from tests.plugins_fixtures import FAST, copy_plugins, reloading
from tests.test_host_temp_cleaner import listener_folders
from tests.test_reload_undecodable import edit_restarts

#: A folder name of the longest length most file systems take.
_SEGMENT = "d" * 250


def _manifest(plugin_id: str, more: str = "") -> str:
    return f'id = "{plugin_id}"\nversion = "1"\nentry = "echo_plugin:EchoPlugin"\n{more}'


@pytest.fixture
def deep_plugins(tmp_path: Path) -> Iterator[Path]:
    """A plugins folder ~4,000 bytes deep holding the fixture plugin ``echo``, and a plugin
    folder ``long`` whose path passes PATH_MAX (4,096): made through descriptors (``dir_fd``),
    which no such limit applies to."""
    # The plugins folder's path 4,000 bytes long: its echo plugin's files stay under 4,096.
    parent = tmp_path
    while len(os.fsencode(parent / _SEGMENT)) < 4000 - len("/plugins"):
        parent /= _SEGMENT
    parent /= "d" * (4000 - len("/plugins") - len(os.fsencode(parent)) - 1)
    parent.mkdir(parents=True)
    directory = copy_plugins(parent, "echo")
    long_name = "long" + "e" * 100
    folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir(long_name, dir_fd=folder)
        manifest = os.open(f"{long_name}/plugin.toml", os.O_WRONLY | os.O_CREAT, dir_fd=folder)
        os.write(manifest, _manifest("long").encode())
        os.close(manifest)
    finally:
        os.close(folder)
    assert len(os.fsencode(directory / long_name)) > 4096
    yield directory
    # rmtree walks by descriptors too.
    shutil.rmtree(tmp_path / _SEGMENT)


def _long_folder_problem(records: Records) -> str:
    said = records.select(text="PATH_MAX")
    assert [record.levelno for record in said] == [logging.ERROR], said
    return said[0].getMessage()


async def test_a_plugin_folder_past_path_max_is_skipped_and_the_others_run(
    deep_plugins: Path,
) -> None:
    with watching("isoplug") as records:
        async with Host(deep_plugins, config=FAST) as host:
            await host.wait_ready(30)
            assert await host.call("echo", "echo", "hi") == "hi"
            assert [info.id for info in host.plugins()] == ["echo"]
            assert len(host.problems) == 1
    problem = _long_folder_problem(records)
    assert "/plugin.toml: its folder cannot be read: its path is " in problem
    assert "more than the system takes (4096 bytes, PATH_MAX)" in problem
    assert "move the plugins folder to a shorter path" in problem


async def test_hot_reload_goes_on_beside_a_plugin_folder_past_path_max(
    deep_plugins: Path,
) -> None:
    """Planning a batch looks at every plugin folder, the one past PATH_MAX too: an edit of
    another plugin's code still restarts it."""
    with watching("isoplug.host") as records:
        async with reloading(deep_plugins) as host:
            await edit_restarts(deep_plugins, host)
    assert not records.select(text="could not be applied")
    assert not records.select(text="watching the plugins folder stopped")


def test_discovery_names_a_plugin_folder_past_path_max_only_when_it_holds_a_manifest(
    deep_plugins: Path,
) -> None:
    (long_folder,) = [p for p in deep_plugins.iterdir() if p.name.startswith("long")]
    folder = os.open(deep_plugins, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.unlink(f"{long_folder.name}/plugin.toml", dir_fd=folder)
    finally:
        os.close(folder)
    found = discover(deep_plugins)
    assert ([m.id for m in found.manifests], found.problems) == (["echo"], ())
    assert plugin_folders(found) == {deep_plugins / "echo"}


async def test_a_path_with_a_line_break_or_a_tab_is_escaped_in_every_error(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo")
    for name, plugin_id in (("a\nb", "nl"), ("t\tab", "tab")):
        (directory / name).mkdir()
        (directory / name / "plugin.toml").write_text(_manifest(plugin_id))
    with watching("isoplug") as records:
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(30)
            assert await host.call("echo", "echo", 1) == 1
    said = sorted(r.getMessage() for r in records.select(text="holds control or invisible"))
    assert said == [
        f"{directory}/a\\nb/plugin.toml: the plugin's folder name 'a\\nb' holds control or "
        "invisible characters; rename the folder; plugin skipped",
        f"{directory}/t\\tab/plugin.toml: the plugin's folder name 't\\tab' holds control or "
        "invisible characters; rename the folder; plugin skipped",
    ]


@pytest.mark.parametrize(
    ("written", "kind"),
    [("482913", "integer"), ("4829.13", "number"), ("true", "boolean"), ("[4829]", "list")],
)
async def test_an_unquoted_environment_value_is_refused_without_being_echoed(
    tmp_path: Path, written: str, kind: str
) -> None:
    directory = copy_plugins(tmp_path, "echo")
    (directory / "secret").mkdir()
    manifest = directory / "secret" / "plugin.toml"
    manifest.write_text(_manifest("secret", f"[environment]\nAPI_PIN = {written}\n"))
    with watching("isoplug") as records:
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(30)
    (record,) = records.select(text="API_PIN")
    assert record.getMessage() == (
        f"{manifest}: field 'environment.API_PIN': must be a string, got {kind} (its value is "
        'not shown: environment values may be secrets); quote it: API_PIN = "..."; plugin '
        "skipped"
    )
    assert "4829" not in record.getMessage()


@pytest.mark.parametrize("field", ["id", "group", "entry"])
async def test_an_id_group_or_entry_ending_in_a_line_break_is_refused(
    tmp_path: Path, field: str
) -> None:
    """Python's ``$`` matches before a last newline: ``"calc\\n"`` was a valid id."""
    directory = copy_plugins(tmp_path, "echo")
    (directory / "odd").mkdir()
    values = {"id": "odd", "group": "g", "entry": "echo_plugin:EchoPlugin"}
    values[field] += "\n"
    manifest = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in values.items())
    (directory / "odd" / "plugin.toml").write_text(manifest + 'version = "1"\n')
    with watching("isoplug") as records:
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(30)
            assert [info.id for info in host.plugins()] == ["echo"]
    (record,) = records.select(text="odd/plugin.toml")
    assert f"field {field!r}: " in record.getMessage()
    assert "is not valid" in record.getMessage()


@pytest.fixture
def cjk_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A TMPDIR whose socket paths stay within 100 characters but pass 100 bytes (and
    sun_path's 108): CJK characters take 3 bytes each."""
    parent = tempfile.mkdtemp(prefix="i", dir="/tmp")
    # The rest of a socket's path: /isoplug-...-XXXXXXXX/sock.
    rest = len(f"/{owner_prefix()}XXXXXXXX/sock")
    name = "日" * (100 - len(parent) - 1 - rest)
    place = os.path.join(parent, name)
    os.mkdir(place)
    assert len(place) + rest <= 100 and len(os.fsencode(place)) + rest > 108
    monkeypatch.setenv("TMPDIR", place)
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield place
    shutil.rmtree(parent)


async def test_a_tmpdir_long_in_bytes_is_passed_over_in_the_words_of_a_long_one(
    tmp_path: Path, cjk_tmpdir: str
) -> None:
    with watching("isoplug") as records:
        async with Host(copy_plugins(tmp_path, "echo"), config=FAST) as host:
            await host.wait_ready(30)
            assert await host.call("echo", "echo", "hi") == "hi"
            assert all(folder.startswith("/tmp/isoplug-") for folder in listener_folders(host))
    (record,) = records.select(text="private folders")
    assert record.getMessage() == (
        f"isoplug's private folders (its sockets) are made in /tmp: {cjk_tmpdir}: a socket "
        f"path there passes 100 bytes; a dead host's are looked for there too (to keep them "
        f"in {cjk_tmpdir}: set TMPDIR to a folder with a shorter path)"
    )
