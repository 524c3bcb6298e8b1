"""Hot reload of folders whose change is refused: a plugin folder skipped for its manifest
(invalid, or an id taken) is a plugin's folder, not shared code, also once removed; and a
plugin kept running as it was (its ``plugin.toml`` no longer validates, or its ``[config]``
refused) is said once, counted in ``host.kept``, and makes ``isoplug run --reload`` end
with 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isoplug.host.registry import discover
from isoplug.host.reload_plan import plan_reload, plugin_folders
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import copy_plugins, reloading
from tests.test_host_reload import (
    Console,
    barrier,
    replace_in,
    running_plans,
    touch_code,
)

pytest.importorskip("watchfiles")


def add_skipped_folders(directory: Path) -> tuple[Path, Path]:
    """A folder with an invalid manifest, and one whose id is taken (by ``echo``)."""
    broken = directory / "broken"
    broken.mkdir()
    (broken / "plugin.toml").write_text('id = "broken"\nversion = "1"\nentry = "b:B"\nbogus = 1\n')
    (broken / "b.py").write_text("X = 1\n")
    twin = directory / "zecho"
    shutil.copytree(directory / "echo", twin)
    return broken, twin


def test_plan_files_of_a_removed_skipped_folder_are_not_shared_code(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    broken, twin = add_skipped_folders(directory)
    before = discover(directory)
    assert {broken, twin} <= plugin_folders(before) and len(before.problems) == 2
    running = running_plans(directory)
    shutil.rmtree(broken)
    shutil.rmtree(twin)
    gone = [broken / "b.py", broken / "plugin.toml", twin / "echo_plugin.py", broken, twin]
    plan, problems = plan_reload(
        running, discover(directory), gone, Path.is_file, plugin_folders(before)
    )
    assert not plan and problems == []
    # Shared code beside the plugins still restarts every runner.
    plan, _ = plan_reload(
        running,
        discover(directory),
        [directory / "shared" / "helpers.py"],
        Path.is_file,
        plugin_folders(before),
    )
    assert sorted(plan.restart) == ["echo", "leveled"]


async def test_editing_or_removing_a_skipped_folder_restarts_no_plugin(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    broken, twin = add_skipped_folders(directory)
    async with reloading(directory) as host:
        assert len(host.problems) == 2
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            # Its code changed: that folder is checked again (its problem told again), only.
            (broken / "b.py").write_text("X = 2\n")
            await records.wait_for_record(text="unknown field 'bogus'")
            (twin / "echo_plugin.py").write_text("X = 2\n")
            await records.wait_for_record(text="is already used by")
            shutil.rmtree(broken)
            shutil.rmtree(twin)
            await eventually(lambda: host.problems == [])
            await barrier(host, directory, "leveled")
            assert host.plugin("echo").pid == pid
            assert not records.select(text="restarting runner echo")


def test_isoplug_run_reload_a_kept_manifest_is_said_once_and_ends_with_1(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo")
    console = Console(directory)
    try:
        console.read_until("ready: runner echo", "reload: watching")
        (directory / "echo" / "plugin.toml").write_text("id = [unfinished")
        console.read_until("keeps running as it was until it is fixed")
    finally:
        returncode = console.stop()
    assert returncode == 1, console.text
    assert "plugin skipped" not in console.text, "it is not skipped: it runs"
    assert console.text.count("echo/plugin.toml") == 1, console.text
    assert "exit code 1: running as they were, their plugin.toml refused, at the end: echo" in (
        console.text
    )


def test_isoplug_run_reload_a_config_refused_at_the_end_ends_with_1(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "configured", "echo")
    manifest = directory / "configured" / "plugin.toml"
    console = Console(directory)
    try:
        console.read_until("ready: runner configured", "ready: runner echo", "reload: watching")
        replace_in(manifest, 'greeting = "Hello"', "greeting = 5")
        console.read_until("it keeps the configuration it runs with")
    finally:
        returncode = console.stop()
    assert returncode == 1, console.text
    assert "running as they were, their plugin.toml refused, at the end: configured" in (
        console.text
    )


def test_isoplug_run_reload_a_config_refused_then_restored_ends_with_0(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "configured", "echo")
    manifest = directory / "configured" / "plugin.toml"
    console = Console(directory)
    try:
        console.read_until("ready: runner configured", "ready: runner echo", "reload: watching")
        replace_in(manifest, 'greeting = "Hello"', "greeting = 5")
        console.read_until("it keeps the configuration it runs with")
        replace_in(manifest, "greeting = 5", 'greeting = "Hello"')
        # A later batch: the one putting it back is applied by then.
        touch_code(directory / "echo" / "echo_plugin.py")
        console.read_until("restarting runner echo")
    finally:
        returncode = console.stop()
    assert returncode == 0, console.text


async def test_a_plugin_folder_removed_in_two_steps_restarts_no_other(tmp_path: Path) -> None:
    """``git rm plugin.toml``, then the rest of the folder: its code is not shared code."""
    directory = copy_plugins(tmp_path, "echo", "leveled", "printer")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            (directory / "printer" / "plugin.toml").unlink()
            await eventually(lambda: "printer" not in {p.id for p in host.plugins()})
            shutil.rmtree(directory / "printer")
            await barrier(host, directory, "leveled")
            assert host.plugin("echo").pid == pid
            assert not records.select(text="restarting runner echo")


async def test_a_new_folder_reusing_a_running_plugins_id_is_the_one_skipped(
    tmp_path: Path,
) -> None:
    """Whatever its name sorts as: ``cp -r m_echo a_echo`` must not take ``echo`` over."""
    directory = copy_plugins(tmp_path, "echo", "leveled")
    (directory / "echo").rename(directory / "m_echo")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            shutil.copytree(directory / "m_echo", directory / "a_echo")
            await records.wait_for_record(text="a_echo/plugin.toml: field 'id'")
            await barrier(host, directory, "leveled")
            assert host.plugin("echo").pid == pid
            assert not records.select(text="replacing it")
            (problem,) = host.problems
            assert "m_echo/plugin.toml, which runs it; plugin skipped" in problem, problem
            # Its folder is still the running plugin's: an edit there restarts it.
            touch_code(directory / "m_echo" / "echo_plugin.py")
            await eventually(lambda: host.plugin("echo").pid not in (None, pid))
