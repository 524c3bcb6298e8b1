"""Hot reload (``Host(reload=True)``, ``isoplug run --reload``): what a batch of file changes
does to the running host. The plan is tested without files; the rest with real runners over a
copied plugins folder that the tests edit."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.manifest import load_manifest
from isoplug.host.registry import Discovery, RunnerPlan, discover
from isoplug.host.reload_compile import hold_uncompiled
from isoplug.host.reload_plan import plan_reload
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FIXTURES, copy_plugins, process_alive, reloading

pytest.importorskip("watchfiles")


def touch_code(path: Path) -> None:
    with path.open("a") as source:
        source.write("\n# edited\n")


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


def set_id(directory: Path, old: str, new: str) -> None:
    manifest = directory / old / "plugin.toml"
    manifest.write_text(manifest.read_text().replace(f'id = "{old}"', f'id = "{new}"'))


def test_plan_an_id_changed_in_place_stops_the_old_plugin_and_starts_the_new(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    running = running_plans(directory)
    set_id(directory, "echo", "echo2")
    plan, problems = plan_reload(
        running, discover(directory), [directory / "echo" / "plugin.toml"], Path.is_file
    )
    assert (plan.stop, [p.runner_id for p in plan.start], plan.kept) == (("echo",), ["echo2"], {})
    assert (plan.restart, problems) == ((), [])
    assert "now names plugin 'echo2'" in plan.why["echo"]
    assert "(was 'echo')" in plan.why["echo2"]


def test_plan_files_of_a_removed_plugin_folder_are_not_shared_code(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    running = running_plans(directory)
    shutil.rmtree(directory / "leveled")
    gone = [directory / "leveled" / "leveled_plugin.py", directory / "leveled" / "plugin.toml"]
    plan, _ = plan_reload(
        running, discover(directory), [*gone, directory / "leveled"], Path.is_file
    )
    assert (plan.stop, plan.restart) == (("leveled",), ())
    assert plan.why["leveled"] == "its plugin folder is gone"


def test_plan_code_of_a_folder_whose_manifest_is_invalid_is_not_shared(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    running = running_plans(directory)
    (directory / "draft").mkdir()
    (directory / "draft" / "plugin.toml").write_text("id = [unfinished")
    (directory / "draft" / "draft.py").write_text("X = 1\n")
    plan, problems = plan_reload(
        running, discover(directory), [directory / "draft" / "draft.py"], Path.is_file
    )
    assert not plan and len(problems) == 1


def test_plan_restarts_for_code_only_and_names_the_file(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    data = directory / "echo" / "state.json"
    plan, _ = plan_reload(running_plans(directory), discover(directory), [data], Path.is_file)
    assert not plan, "a file the plugin writes beside its code restarts nothing"
    code = directory / "echo" / "echo_plugin.py"
    plan, _ = plan_reload(running_plans(directory), discover(directory), [data, code], Path.is_file)
    assert plan.restart == ("echo",) and plan.why["echo"] == f"{code} changed"
    manifest = directory / "echo" / "plugin.toml"
    manifest.write_text(
        manifest.read_text().replace("entry =", 'reload_on = ["*.py", "*.json"]\nentry =')
    )
    plan, _ = plan_reload(running_plans(directory), discover(directory), [data], Path.is_file)
    assert plan.restart == ("echo",) and plan.why["echo"] == f"{data} changed"


async def test_plan_does_not_restart_for_code_that_does_not_compile(tmp_path: Path) -> None:
    """A file saved in the middle of an edit: the runner keeps the code it loaded, and the
    plan says where and why; the file compiling again restarts it."""
    directory = copy_plugins(tmp_path, "echo")
    code = directory / "echo" / "echo_plugin.py"
    good = code.read_text()
    code.write_text(good + "\ndef half(:\n")
    plan, _ = plan_reload(running_plans(directory), discover(directory), [code], Path.is_file)
    assert plan.restart == ("echo",) and plan.compile_first["echo"][1] == (code,)
    plan = await hold_uncompiled(plan, (), 10)
    assert plan and plan.restart == ()
    assert plan.uncompiled["echo"].startswith(f"{code}, line ")
    assert plan.uncompiled["echo"].endswith(": SyntaxError: invalid syntax")
    code.write_text(good)
    plan, _ = plan_reload(running_plans(directory), discover(directory), [code], Path.is_file)
    plan = await hold_uncompiled(plan, (), 10)
    assert plan.restart == ("echo",) and not plan.uncompiled


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


async def test_a_syntax_error_saved_mid_edit_keeps_the_plugin_running(tmp_path: Path) -> None:
    """Saved with a syntax error, the plugin's code is not restarted into a failure: it keeps
    running (same runner, still answering), the log says where; fixed, it restarts."""
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        pid = host.plugin("echo").pid
        code = directory / "echo" / "echo_plugin.py"
        good = code.read_text()
        with watching("isoplug.host") as said:
            code.write_text(good + "\ndef half(:\n")
            record = await said.wait_for_record(text="it keeps running the code it loaded")
        assert "echo_plugin.py, line " in record.getMessage()
        assert host.plugin("echo").pid == pid and await host.call("echo", "echo", 1) == 1
        code.write_text(good + "\n# fixed\n")
        await eventually(
            lambda: (
                host.plugin("echo").pid not in (None, pid)
                and host.plugin("echo").state.value == "ready"
            )
        )


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


async def test_what_the_host_set_at_runtime_holds_across_a_manifest_edit(tmp_path: Path) -> None:
    """A level set with set_log_level() holds when an edited plugin.toml replaces the runner,
    as across a restart; a plugin stopped with host.stop() stays stopped when its code or its
    plugin.toml changes, until restarted."""
    directory = copy_plugins(tmp_path, "leveled", "echo")
    async with reloading(directory) as host:
        await host.set_log_level("leveled", "DEBUG")
        manifest = directory / "leveled" / "plugin.toml"
        old_pid = host.plugin("leveled").pid
        manifest.write_text(manifest.read_text().replace('version = "0.1"', 'version = "9"'))
        await eventually(
            lambda: (
                host.plugin("leveled").pid not in (None, old_pid)
                and host.plugin("leveled").state.value == "ready"
            )
        )
        with watching("plugin.leveled") as records:
            await host.call("leveled", "emit", "after")
            await records.wait_for_record(text="done after")
            assert records.select(text="ctx after DEBUG")

        await host.stop("echo")
        echo = directory / "echo"
        with watching("isoplug.host") as said:
            touch_code(echo / "echo_plugin.py")
            await said.wait_for_record(text="runner echo stays stopped")
            manifest = echo / "plugin.toml"
            manifest.write_text(manifest.read_text().replace('version = "0.1"', 'version = "9"'))
            await said.wait_for_record(text="runner echo was stopped, and stays so")
        assert host.plugin("echo").state.value == "stopped"
        await host.restart("echo")
        assert await host.call("echo", "echo", 5) == 5


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

        def read_until(*texts: str) -> None:
            """Read lines until each of ``texts`` came, in any order (the watcher may be up
            before the runner is ready, or after)."""
            assert process.stdout is not None
            waiting = set(texts)
            for line in process.stdout:
                seen.append(line)
                waiting = {text for text in waiting if text not in line}
                if not waiting:
                    return
            raise AssertionError(f"{waiting!r} never came: {''.join(seen)}")

        read_until("ready: runner echo", "reload: watching")
        touch_code(directory / "echo" / "echo_plugin.py")
        read_until("echo_plugin.py changed; restarting runner echo")
        read_until("ready: runner echo")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0, "".join(seen)


async def test_an_id_changed_in_place_leaves_one_runner_for_the_folder(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            assert pid is not None
            set_id(directory, "echo", "echo2")
            await eventually(lambda: {p.id for p in host.plugins()} == {"echo2"})
            await host.wait_ready(20)
            await eventually(lambda: not process_alive(pid))
            assert await host.call("echo2", "echo", 7) == 7
            assert records.select(text="now names plugin 'echo2'; stopping it")
            assert not records.select(text="no longer validates")


async def barrier(host: Host, directory: Path, plugin: str) -> None:
    """Edit ``plugin``'s code and wait for its restart: every earlier batch of changes has
    been applied by then (the reloader applies batches one after the other)."""
    pid = host.plugin(plugin).pid
    touch_code(directory / plugin / f"{plugin}_plugin.py")
    await eventually(lambda: host.plugin(plugin).pid not in (None, pid))
    await host.wait_ready(20)


async def test_removing_a_plugin_folder_restarts_no_other(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled", "printer")
    async with reloading(directory) as host:
        echo_pid = host.plugin("echo").pid
        shutil.rmtree(directory / "printer")
        await eventually(lambda: "printer" not in {p.id for p in host.plugins()})
        await barrier(host, directory, "leveled")
        assert host.plugin("echo").pid == echo_pid


WRITER = """\
from pathlib import Path

import isoplug


class Writer(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        (Path(__file__).parent / "state.json").write_text("{}")

    @isoplug.method
    def save(self, text: str) -> None:
        (Path(__file__).parent / "state.json").write_text(text)
"""


async def test_a_plugin_writing_beside_its_code_is_not_restarted(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "leveled")
    (directory / "writer").mkdir()
    (directory / "writer" / "writer_plugin.py").write_text(WRITER)
    (directory / "writer" / "plugin.toml").write_text(
        'id = "writer"\nversion = "1"\nentry = "writer_plugin:Writer"\n'
    )
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("writer").pid
            await host.call("writer", "save", '{"n": 1}')
            await barrier(host, directory, "leveled")
            assert host.plugin("writer").pid == pid
            await barrier(host, directory, "writer")
            code = directory.resolve() / "writer" / "writer_plugin.py"
            assert records.select(text=f"reload: {code} changed; restarting runner writer")


async def test_a_folder_problem_is_logged_once_per_change_of_it(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    (directory / "broken").mkdir()
    broken = directory / "broken" / "plugin.toml"
    broken.write_text('id = "broken"\nversion = "1"\nentry = "b:B"\nbogus = 1\n')
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            await barrier(host, directory, "echo")
            await barrier(host, directory, "leveled")
            assert not records.select(text="bogus"), "told at start, not again"
            broken.write_text(broken.read_text() + "# still broken\n")
            await records.wait_for_record(text="unknown field 'bogus'")
            await barrier(host, directory, "echo")
            assert len(records.select(text="unknown field 'bogus'")) == 1


def join_group(directory: Path, plugin: str, group: str) -> None:
    manifest = directory / plugin / "plugin.toml"
    manifest.write_text(manifest.read_text().replace("entry =", f'group = "{group}"\nentry =', 1))


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


async def test_a_group_restarts_for_code_while_a_members_config_is_refused(
    tmp_path: Path,
) -> None:
    """A sibling's [config] its schema refuses must not hold back the group's code, nor be
    logged again with every change elsewhere; the refused one keeps its configuration."""
    directory = copy_plugins(tmp_path, "configured", "echo")
    join_group(directory, "configured", "g")
    join_group(directory, "echo", "g")
    refusal = "config field 'greeting'"
    manifest = directory / "configured" / "plugin.toml"
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            assert host.plugin("configured").pid == pid
            replace_in(manifest, 'greeting = "Hello"', "greeting = 5")
            await records.wait_for_record(text=refusal)
            touch_code(directory / "echo" / "echo_plugin.py")
            await eventually(lambda: host.plugin("echo").pid not in (None, pid))
            await host.wait_ready(20)
            state = await host.call("configured", "state")
            assert state["config"]["greeting"] == "Hello"
            assert state["pid"] == host.plugin("echo").pid
            await barrier(host, directory, "echo")
            assert len(records.select(text=refusal)) == 1, "told once, not with every change"
            # Saved again (still refused): its folder changed, so it is told again.
            replace_in(manifest, "greeting = 5", "greeting = 6")
            await eventually(lambda: len(records.select(text=refusal)) == 2)
            replace_in(manifest, "greeting = 6", 'greeting = "Hi"')
            await records.wait_for_record(text="plugin configured has a new configuration")
            state = await host.call("configured", "state")
            assert state["config"]["greeting"] == "Hi"


async def test_a_kept_plugins_group_restarts_for_a_siblings_code(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "duo_a", "duo_b")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("duo_a").pid
            (directory / "duo_a" / "plugin.toml").write_text("id = [unfinished")
            await records.wait_for_record(text="keeps running as it was")
            touch_code(directory / "duo_b" / "duo_b_plugin.py")
            await eventually(lambda: host.plugin("duo_b").pid not in (None, pid))
            await host.wait_ready(20)
            assert host.plugin("duo_a").pid == host.plugin("duo_b").pid


def test_plan_sees_changes_through_a_link_under_a_relative_plugins_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = copy_plugins(tmp_path / "real", "echo") / "echo"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "echo").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    directory = Path("plugins")
    running = {"echo": RunnerPlan("echo", (load_manifest(directory / "echo"),))}
    for code in (tmp_path / "plugins" / "echo" / "echo_plugin.py", real / "echo_plugin.py"):
        plan, _ = plan_reload(running, discover(directory), [code], Path.is_file)
        assert plan.restart == ("echo",), code


async def test_a_linked_plugin_under_a_relative_plugins_folder_restarts_for_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both folders are watched, one inode under two paths: inotify names a change by the path
    # watched last (the roots go sorted), here the link's.
    real = copy_plugins(tmp_path / "external", "echo") / "echo"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "echo").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    async with reloading(Path("plugins")) as host:
        for code in (Path("plugins") / "echo" / "echo_plugin.py", real / "echo_plugin.py"):
            await restarted_by(host, "echo", functools.partial(touch_code, code))


async def restarted_by(host: Host, plugin: str, edit: Callable[[], None]) -> None:
    pid = host.plugin(plugin).pid
    edit()
    await eventually(lambda: host.plugin(plugin).pid not in (None, pid))
    await host.wait_ready(20)


CRASHING = """\
import isoplug


class Plugin(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        raise RuntimeError("not yet")
"""

FIXED = """\
import isoplug


class Plugin(isoplug.Plugin):
    @isoplug.method
    def ping(self) -> str:
        return "pong"
"""


async def test_a_fix_saved_during_the_backoff_after_a_crash_restarts_it_at_once(
    tmp_path: Path,
) -> None:
    """The backoff (here 30 s, past ``eventually``'s wait) gives way to the fix, which
    restarts the plugin once."""
    directory = tmp_path / "plugins"
    (directory / "slow").mkdir(parents=True)
    code = directory / "slow" / "slow_plugin.py"
    code.write_text(FIXED)
    (directory / "slow" / "plugin.toml").write_text(
        'id = "slow"\nversion = "1"\nentry = "slow_plugin:Plugin"\n\n'
        "[restart]\nbackoff_initial = 30\nbackoff_max = 30\n"
    )
    async with reloading(directory) as host:
        code.write_text(CRASHING)
        await eventually(lambda: host.plugin("slow").state.value == "restarting")
        restarts = host.plugin("slow").restarts
        code.write_text(FIXED)
        await eventually(lambda: host.plugin("slow").state.value == "ready")
        assert await host.call("slow", "ping") == "pong"
        assert host.plugin("slow").restarts == restarts + 1


class Console:
    """``isoplug run --reload DIRECTORY`` as a user runs it, read line by line."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "isoplug", "run", "--reload", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.seen: list[str] = []

    def read_until(self, *texts: str) -> None:
        """Read lines until each of ``texts`` came, in any order."""
        assert self.process.stdout is not None
        waiting = set(texts)
        for line in self.process.stdout:
            self.seen.append(line)
            waiting = {text for text in waiting if text not in line}
            if not waiting:
                return
        raise AssertionError(f"{waiting!r} never came: {''.join(self.seen)}")

    def stop(self) -> int:
        """Ctrl-C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=30)
        self.seen.append(rest)
        return self.process.returncode

    @property
    def text(self) -> str:
        return "".join(self.seen)


def test_isoplug_run_reload_exit_code_counts_what_is_fixed_by_the_end(tmp_path: Path) -> None:
    """A half-saved edit that failed to import, and a manifest invalid at the start, both
    fixed during the session: the code is 0."""
    directory = copy_plugins(tmp_path, "echo", "leveled")
    manifest = directory / "leveled" / "plugin.toml"
    good = manifest.read_text()
    manifest.write_text("bogus = 1\n" + good)
    code = directory / "echo" / "echo_plugin.py"
    console = Console(directory)
    try:
        console.read_until("ready: runner echo", "reload: watching", "unknown field 'bogus'")
        saved = code.read_text()
        # Compiles (a syntax error would keep the runner: see above), fails to import.
        code.write_text("import isoplug\nimport a_module_not_written_yet\n")
        console.read_until("plugin echo: failed")
        code.write_text(saved)
        console.read_until("plugin echo: ready")
        manifest.write_text(good)
        console.read_until("plugin leveled: ready")
    finally:
        returncode = console.stop()
    assert returncode == 0, console.text
