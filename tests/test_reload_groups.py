"""Hot reload of plugin groups: a member's edit that would get it skipped for its group keeps
it running as it was (as an invalid ``plugin.toml`` does); a member leaving or joining
replaces the group's runner, and the log and the old runner's exit account say why."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug.host.registry import RunnerPlan, discover
from isoplug.host.reload_plan import plan_reload
from isoplug.host.status import PluginState
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FIXTURES, copy_plugins, reloading
from tests.test_host_reload import barrier, join_group, replace_in

pytest.importorskip("watchfiles")


def group_of_two(tmp_path: Path) -> Path:
    """A plugins folder where ``echo`` and ``leveled`` share the runner of group ``g``."""
    directory = copy_plugins(tmp_path, "echo", "leveled")
    join_group(directory, "echo", "g")
    join_group(directory, "leveled", "g")
    return directory


def top_level(manifest: Path, line: str) -> None:
    """Add a top-level key to ``manifest`` (before its tables)."""
    replace_in(manifest, "entry =", f"{line}\nentry =")


def append(manifest: Path, text: str) -> None:
    manifest.write_text(manifest.read_text() + text)


def other_python(tmp_path: Path) -> str:
    """Another path to the host's interpreter: a plugin naming it asks for another one."""
    link = tmp_path / "python-link"
    link.symlink_to(sys.executable)
    return str(link)


#: Each grouping problem an edit of leveled's plugin.toml may bring: what echo's manifest
#: says first, the edit of leveled's, and the problem's words.
GROUPING_EDITS: dict[str, tuple[Callable[[Path], None], Callable[[Path, Path], None], str]] = {
    "environment": (
        lambda echo: append(echo, '\n[environment]\nX = "1"\n'),
        lambda leveled, _: append(leveled, '\n[environment]\nX = "2"\n'),
        "field 'environment.X': differs from plugin 'echo' of group 'g'",
    ),
    "limits": (
        lambda echo: append(echo, "\n[limits]\nopen_files = 256\n"),
        lambda leveled, _: append(leveled, "\n[limits]\nopen_files = 512\n"),
        "field 'limits.open_files': 512 here, 256 in plugin 'echo' of group 'g'",
    ),
    "rate": (
        lambda echo: top_level(echo, "log_write_through_rate = 1000"),
        lambda leveled, _: top_level(leveled, "log_write_through_rate = 2000"),
        "field 'log_write_through_rate': 2000.0 here, 1000.0 in plugin 'echo'",
    ),
    "python": (
        lambda echo: None,
        lambda leveled, tmp: top_level(leveled, f"python = {other_python(tmp)!r}"),
        "field 'python':",
    ),
    "group named as an id": (
        lambda echo: None,
        lambda leveled, _: replace_in(leveled, 'group = "g"', 'group = "echo"'),
        "field 'group': 'echo' is also a plugin id",
    ),
    "stdio pipe": (
        lambda echo: None,
        lambda leveled, _: top_level(leveled, 'stdio = "pipe"'),
        "field 'stdio':",
    ),
}


@pytest.mark.parametrize("kind", list(GROUPING_EDITS))
async def test_an_edit_that_breaks_a_group_keeps_the_member_running(
    tmp_path: Path, kind: str
) -> None:
    set_up, edit, problem = GROUPING_EDITS[kind]
    directory = group_of_two(tmp_path)
    set_up(directory / "echo" / "plugin.toml")
    manifest = directory / "leveled" / "plugin.toml"
    before = manifest.read_text()
    kept = "plugin leveled keeps running as it was until it is fixed"
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("leveled").pid
            edit(manifest, tmp_path)
            await records.wait_for_record(text=kept)
            assert problem in host.kept["leveled"]
            assert {p.id for p in host.plugins()} == {"echo", "leveled"}
            assert host.plugin("leveled").state is PluginState.READY
            assert host.plugin("leveled").pid == host.plugin("echo").pid == pid
            assert not records.select(text="replacing")
            # A change elsewhere restarts the group on the manifest leveled runs, and does not
            # tell its problem again.
            await barrier(host, directory, "echo")
            assert host.plugin("leveled").pid == host.plugin("echo").pid
            assert len(records.select(text=kept)) == 1
            assert "leveled" in host.kept
            manifest.write_text(before)
            await eventually(lambda: "leveled" not in host.kept)
            await host.wait_ready(20)


async def test_a_removed_members_group_is_replaced_saying_so(tmp_path: Path) -> None:
    directory = group_of_two(tmp_path)
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            shutil.rmtree(directory / "leveled")
            await eventually(lambda: host.plugin("echo").pid not in (None, pid))
            await host.wait_ready(20)
            assert {p.id for p in host.plugins()} == {"echo"}
            await records.wait_for_record(
                text="reload: plugin leveled's folder was removed: replacing runner g without it"
            )
            # The old runner's exit account: no one asked for its stop.
            await records.wait_for_record(
                text="exited with code 0; replaced by hot reload (plugin leveled's folder was "
                "removed); uptime"
            )
            assert not records.select(text="on request")
            assert not records.select(text="a plugin.toml of runner g changed")


async def test_a_joining_plugins_group_is_replaced_saying_so(tmp_path: Path) -> None:
    directory = group_of_two(tmp_path)
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("echo").pid
            # Made aside, then moved in: one change, not a plugin of its own first.
            aside = copy_plugins(tmp_path / "aside", "printer")
            join_group(aside, "printer", "g")
            (aside / "printer").rename(directory / "printer")
            await eventually(lambda: host.plugin("echo").pid not in (None, pid))
            await host.wait_ready(20)
            assert host.plugin("printer").pid == host.plugin("echo").pid
            await records.wait_for_record(
                text="reload: plugin printer joins group g: replacing runner g"
            )
            await records.wait_for_record(
                text="exited with code 0; replaced by hot reload (plugin printer joins group g)"
            )
            assert not records.select(text="on request")


def test_plan_a_newcomer_named_as_a_running_group_is_the_one_skipped(tmp_path: Path) -> None:
    directory = group_of_two(tmp_path)
    manifests = discover(directory).manifests
    running = {"g": RunnerPlan("g", tuple(sorted(manifests, key=lambda m: m.id)))}
    shutil.copytree(FIXTURES / "printer", directory / "printer")
    replace_in(directory / "printer" / "plugin.toml", 'id = "printer"', 'id = "g"')
    plan, problems = plan_reload(
        running, discover(directory), [directory / "printer" / "plugin.toml"], Path.is_file
    )
    assert not plan
    assert len(problems) == 1
    assert "field 'id': 'g' is the group of plugin 'echo', which runs" in problems[0]
