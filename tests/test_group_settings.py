"""Plugins of one group share a process: the settings of that process (``python``,
``[environment]``, ...) must agree, and a plugin that disagrees is skipped with a problem that
names the other plugin. Real hosts and runners."""

from __future__ import annotations

import sys
from pathlib import Path

from isoplug import Host
from isoplug.host.manifest import load_manifest
from isoplug.host.registry import plan_runners
from tests.plugins_fixtures import FAST

_CODE = (
    "import os, sys, isoplug\n"
    "class P(isoplug.Plugin):\n"
    "    @isoplug.method\n"
    "    def facts(self) -> list[str]:\n"
    "        return [os.environ.get('ZZ', ''), os.environ.get('VIA_WRAPPER', '')]\n"
)


def member(root: Path, name: str, extra: str = "", environment: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"m_{name}.py").write_text(_CODE)
    (folder / "plugin.toml").write_text(
        f'id = "{name}"\nversion = "1"\nentry = "m_{name}:P"\ngroup = "g"\n{extra}'
        f"[environment]\n{environment}"
    )
    return folder


def wrapper(folder: Path) -> Path:
    """An interpreter of the plugin's own: the host's, run by a script that marks it."""
    script = folder / "python-wrapper"
    script.write_text(f'#!/bin/sh\nVIA_WRAPPER=yes exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return script


async def test_a_member_that_names_no_interpreter_is_not_run_by_another_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    first = member(root, "p1")
    member(root, "p2")
    manifest = first / "plugin.toml"
    manifest.write_text(
        manifest.read_text().replace("[environment]", 'python = "python-wrapper"\n[environment]')
    )
    named = wrapper(first)
    async with Host(root, config=FAST) as host:
        await host.wait_ready(30)
        assert [plugin.id for plugin in host.plugins()] == ["p1"]
        assert await host.call("p1", "facts") == ["", "yes"]
        assert host.problems == [
            f"{root / 'p2' / 'plugin.toml'}: field 'python': unset (the host's interpreter) "
            f"here, {str(named)!r} in plugin 'p1' of group 'g' (they share one process, so "
            "they must agree); plugin skipped",
        ]


async def test_naming_the_hosts_own_interpreter_agrees_with_leaving_it_unset(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    member(root, "p1", f"python = {sys.executable!r}\n")
    member(root, "p2")
    member(root, "p3")
    async with Host(root, config=FAST) as host:
        await host.wait_ready(30)
        assert host.problems == []
        assert await host.call("p3", "facts") == ["", ""]


async def test_an_environment_clash_names_the_other_plugin_not_the_values(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    member(root, "e1", environment='ZZ = "secret-one"\n')
    member(root, "e2", environment='ZZ = "secret-two"\n')
    async with Host(root, config=FAST) as host:
        await host.wait_ready(30)
        assert await host.call("e1", "facts") == ["secret-one", ""]
        (problem,) = host.problems
    assert problem == (
        f"{root / 'e2' / 'plugin.toml'}: field 'environment.ZZ': differs from plugin 'e1' of "
        "group 'g' (they share one process, so they must agree; values not shown, as they may "
        "be secrets); plugin skipped"
    )
    assert "secret" not in problem.replace("secrets", "")


def test_a_limit_clash_names_both_values(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    member(root, "a", '[limits]\nmemory = "1GiB"\n')
    member(root, "b", '[limits]\nmemory = "2GiB"\n')
    manifests = [load_manifest(root / name) for name in "ab"]
    plans, problems = plan_runners(manifests)
    assert [m.id for m in plans[0].manifests] == ["a"]
    assert problems == [
        f"{root / 'b' / 'plugin.toml'}: field 'limits.memory': 2.00 GiB (2147483648 bytes) "
        "here, 1.00 GiB (1073741824 bytes) in plugin 'a' of group 'g' (they share one "
        "process, so they must agree); plugin skipped"
    ]
