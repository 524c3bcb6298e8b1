"""Hot reload (``Host(reload=True)``, ``isoplug run --reload``): what a batch of file changes
does to the running host. The plan is tested without files; the rest with real runners over a
copied plugins folder that the tests edit."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.manifest import load_manifest
from isoplug.host.registry import Discovery, RunnerPlan, discover
from isoplug.host.reload import plan_reload
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, FIXTURES, copy_plugins, process_alive

pytest.importorskip("watchfiles")


def touch_code(path: Path) -> None:
    with path.open("a") as source:
        source.write("\n# edited\n")


@asynccontextmanager
async def reloading(directory: Path) -> AsyncIterator[Host]:
    async with Host(directory, config=FAST, reload=True) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        yield host


# -- the plan, without files -----------------------------------------------------------------


def running_plans(directory: Path) -> dict[str, RunnerPlan]:
    manifests = discover(directory).manifests
    return {m.runner_id: RunnerPlan(m.runner_id, (m,)) for m in manifests}


def test_plan_restarts_only_the_plugin_whose_folder_changed(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    running = running_plans(directory)
    plan, problems = plan_reload(
        running, discover(directory), [directory / "echo" / "echo_plugin.py"], Path.is_file
    )
    assert (plan.restart, plan.start, plan.stop, plan.replace, problems) == (
        ("echo",),
        (),
        (),
        (),
        [],
    )


def test_plan_starts_new_stops_removed_and_replaces_changed_manifests(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    running = running_plans(directory)
    shutil.copytree(FIXTURES / "printer", directory / "printer")
    shutil.rmtree(directory / "leveled")
    manifest = directory / "echo" / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('version = "0.1"', 'version = "0.2"'))
    plan, _ = plan_reload(running, discover(directory), [directory / "x"], Path.is_file)
    assert [p.runner_id for p in plan.start] == ["printer"]
    assert plan.stop == ("leveled",)
    assert [p.manifests[0].version for p in plan.replace] == ["0.2"]
    assert plan.restart == ()


def test_plan_keeps_a_plugin_whose_manifest_no_longer_validates(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    running = running_plans(directory)
    (directory / "echo" / "plugin.toml").write_text("id = [unfinished")
    plan, problems = plan_reload(
        running, discover(directory), [directory / "echo" / "plugin.toml"], Path.is_file
    )
    assert not plan
    assert plan.kept == {"echo": directory / "echo" / "plugin.toml"}
    assert len(problems) == 1 and "plugin.toml" in problems[0]


def test_plan_restarts_every_runner_for_shared_code(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    plan, _ = plan_reload(
        running_plans(directory),
        Discovery(discover(directory).manifests, ()),
        [directory / "shared" / "helpers.py", directory / "README.txt"],
        Path.is_file,
    )
    assert sorted(plan.restart) == ["echo", "leveled"]
    plan, _ = plan_reload(
        running_plans(directory), discover(directory), [directory / "notes.txt"], Path.is_file
    )
    assert not plan


def test_plan_sees_changes_through_a_linked_plugin_folder(tmp_path: Path) -> None:
    directory = tmp_path / "plugins"
    directory.mkdir()
    real = copy_plugins(tmp_path / "real", "echo") / "echo"
    (directory / "echo").symlink_to(real, target_is_directory=True)
    manifest = load_manifest(directory / "echo")
    running = {"echo": RunnerPlan("echo", (manifest,))}
    plan, _ = plan_reload(running, discover(directory), [real / "echo_plugin.py"], Path.is_file)
    assert plan.restart == ("echo",)


# -- with real runners -----------------------------------------------------------------------


async def test_editing_code_restarts_that_plugin_only(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    async with reloading(directory) as host:
        echo_pid, other_pid = host.plugin("echo").pid, host.plugin("leveled").pid
        edited = time.monotonic()
        touch_code(directory / "echo" / "echo_plugin.py")
        await eventually(
            lambda: (
                host.plugin("echo").pid not in (None, echo_pid)
                and host.plugin("echo").state.value == "ready"
            )
        )
        logging.getLogger(__name__).info("edit to ready: %.3f s", time.monotonic() - edited)
        assert host.plugin("leveled").pid == other_pid
        assert await host.call("echo", "echo", 5) == 5


async def test_new_and_removed_plugin_folders(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    async with reloading(directory) as host:
        leveled_pid = host.plugin("leveled").pid
        assert leveled_pid is not None
        echo_pid = host.plugin("echo").pid
        copy_plugins(tmp_path, "printer")
        await eventually(lambda: "printer" in {p.id for p in host.plugins()})
        await host.wait_ready(20)
        shutil.rmtree(directory / "leveled")
        await eventually(lambda: "leveled" not in {p.id for p in host.plugins()})
        await eventually(lambda: not process_alive(leveled_pid))
        assert host.plugin("echo").pid == echo_pid


async def test_a_changed_manifest_is_read_again(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "leveled")
    async with reloading(directory) as host:
        with watching("plugin.leveled") as records:
            await host.call("leveled", "emit", "before")
            await records.wait_for_record(text="done before")
            assert records.select(text="ctx before INFO")
            old_pid = host.plugin("leveled").pid
            manifest = directory / "leveled" / "plugin.toml"
            manifest.write_text(
                manifest.read_text().replace("entry =", 'log_level = "WARNING"\nentry =')
            )
            await eventually(
                lambda: (
                    host.plugin("leveled").pid not in (None, old_pid)
                    and host.plugin("leveled").state.value == "ready"
                )
            )
            await host.call("leveled", "emit", "after")
            await records.wait_for_record(text="done after")
            assert records.select(text="ctx after WARNING")
            assert not records.select(text="ctx after INFO")


async def test_a_half_written_manifest_keeps_the_plugin_running(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            manifest = directory / "echo" / "plugin.toml"
            good = manifest.read_text()
            manifest.write_text("id = [unfinished")
            await records.wait_for_record(text="keeps running as it was")
            assert host.plugin("echo").pid == pid
            manifest.write_text(good.replace('version = "0.1"', 'version = "0.2"'))
            await eventually(lambda: host.plugin("echo").pid not in (None, pid))
            await host.wait_ready(20)


def test_isoplug_run_reload_restarts_an_edited_plugin(tmp_path: Path) -> None:
    """As a user runs it: the command line, a file saved, the restart on its console."""
    directory = copy_plugins(tmp_path, "echo")
    process = subprocess.Popen(
        [sys.executable, "-m", "isoplug", "run", "--reload", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:

        def read_until(text: str) -> None:
            assert process.stdout is not None
            for line in process.stdout:
                seen.append(line)
                if text in line:
                    return
            raise AssertionError(f"{text!r} never came: {''.join(seen)}")

        read_until("ready: runner echo")
        read_until("reload: watching")
        touch_code(directory / "echo" / "echo_plugin.py")
        read_until("reload: code changed; restarting runner echo")
        read_until("ready: runner echo")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0, "".join(seen)
