"""A runner's Python environment (docs/security.md, "What a runner inherits"): the host's
``PYTHON*`` settings reach it and work there, forked or spawned; and what isoplug sets for the
runner's interpreter alone (isoplug's folder on ``PYTHONPATH``) never
reaches the programs a plugin starts. Real hosts, real runners, real virtual environments."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import isoplug
from isoplug import Host
from isoplug.host.isoplug_link import host_package_root, isoplug_only_folder
from isoplug.host.manifest import ManifestError, load_manifest
from isoplug.host.zygote import fork_supported
from isoplug.testing import FAST
from tests.probe_plugins import hash_under_seed, write_probe
from tests.process_memory import parent_of
from tests.venvs import install_copy, make_venv, run_in_venv

_PROBE = """
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tracemalloc

import isoplug

#: What a program the plugin starts sees of the variables isoplug sets for the runner.
CHILD = (
    "import json, os; "
    "print(json.dumps({n: os.environ.get(n) for n in ('PYTHONPATH', 'PYTHONUNBUFFERED')}))"
)


class Probe(isoplug.Plugin):
    async def setup(self, ctx):
        self.ctx = ctx

    @isoplug.method
    def child_sees(self, python: str = "", code: str = CHILD, forwarding: bool = False) -> str:
        env = {**os.environ, **self.ctx.log_child_env()} if forwarding else None
        done = subprocess.run(
            [python or sys.executable, "-c", code],
            env=env, capture_output=True, text=True, timeout=60,
        )
        return done.stdout.strip() or done.stderr

    @isoplug.method
    def itself(self) -> dict:
        return {
            "sys_path": sys.path,
            "PYTHONPATH": os.environ.get("PYTHONPATH"),
            "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED"),
            "isoplug": [k for k in os.environ if k.startswith("ISOPLUG")],
            "environ": dict(os.environ),
        }

    @isoplug.method
    async def settings(self) -> dict:
        return {
            "optimize": sys.flags.optimize,
            "no_user_site": sys.flags.no_user_site,
            "safe_path": sys.flags.safe_path,
            "hash": hash("isoplug"),
            "asyncio_debug": asyncio.get_running_loop().get_debug(),
            "tracemalloc": tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0,
            "int_max_str_digits": sys.get_int_max_str_digits(),
            # Python's own hook would start pdb on the runner's stdin.
            "breakpoint": breakpoint("isoplug") if os.environ.get("PYTHONBREAKPOINT") else None,
        }
"""

#: The host's settings of the interpreter that used to be dropped on the way to a runner, and
#: values whose effect a runner can show.
SETTINGS = {
    "PYTHONOPTIMIZE": "1",
    "PYTHONHASHSEED": "1234",
    "PYTHONASYNCIODEBUG": "1",
    "PYTHONTRACEMALLOC": "5",
    "PYTHONNOUSERSITE": "1",
    "PYTHONSAFEPATH": "1",
    "PYTHONINTMAXSTRDIGITS": "640",
    # The hook breakpoint() calls: len("isoplug") answers.
    "PYTHONBREAKPOINT": "builtins.len",
}


def add_probe(plugins: Path, plugin_id: str, manifest: str = "") -> None:
    """A plugin ``plugin_id`` in ``plugins`` that tells what its runner and its children have;
    ``manifest``: more lines of its plugin.toml."""
    write_probe(plugins, plugin_id, _PROBE, manifest)


#: A runner per way of starting: forked from the zygote, spawned, with its own interpreter
#: (which imports isoplug through the host's isoplug link folder), and spawned for a
#: ``PYTHONPATH`` of its manifest's.
STARTS = {
    "forked": "",
    "spawned": 'start = "spawn"',
    "own": f"python = {json.dumps(sys.executable)}",
    "declared": '[environment]\nPYTHONPATH = "declared-lib"',
}


@pytest.mark.parametrize("users_pythonpath", [False, True])
async def test_a_plugins_programs_get_the_users_pythonpath_not_isoplugs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users_pythonpath: bool
) -> None:
    """A program a plugin starts sees the ``PYTHONPATH`` the host has (or its manifest's, or
    none), and ``PYTHONUNBUFFERED=1`` (its prints reach the host line by line), as the plugin's
    own ``os.environ`` does, however its runner started; the runner's ``sys.path`` still has
    isoplug's folder."""
    users = str(tmp_path / "users-lib") if users_pythonpath else None
    if users is None:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", users)
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    plugins = tmp_path / "plugins"
    for plugin_id, manifest in STARTS.items():
        add_probe(plugins, plugin_id, manifest)
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(60)
        for plugin_id in STARTS:
            expected = "declared-lib" if plugin_id == "declared" else users
            child = json.loads(await host.call(plugin_id, "child_sees"))
            assert child == {"PYTHONPATH": expected, "PYTHONUNBUFFERED": "1"}, plugin_id
            itself = await host.call(plugin_id, "itself")
            assert itself["PYTHONPATH"] == expected and itself["PYTHONUNBUFFERED"] == "1"
            assert itself["isoplug"] == ["ISOPLUG_RUNNER_TAG"], plugin_id
            folder = isoplug_only_folder() if plugin_id == "own" else host_package_root()
            assert folder in itself["sys_path"], plugin_id
        forked = host.plugin("forked").pid
        assert forked is not None and parent_of(forked) != os.getpid()


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_the_hosts_python_settings_reach_a_runner_and_work_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """Each of the interpreter's settings the host has reaches a runner, forked (from a zygote
    started with them) or spawned, and takes effect there."""
    expected_hash = hash_under_seed(SETTINGS["PYTHONHASHSEED"])
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    plugins = tmp_path / "plugins"
    add_probe(plugins, "probe", f'start = "{start}"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(60)
        settings = await host.call("probe", "settings")
        pid = host.plugin("probe").pid
        assert pid is not None
        assert (parent_of(pid) == os.getpid()) is (start == "spawn" or not fork_supported())
    assert settings == {
        "optimize": 1,
        "no_user_site": 1,
        "safe_path": True,
        "hash": expected_hash,
        "asyncio_debug": True,
        "tracemalloc": 5,
        "int_max_str_digits": 640,
        "breakpoint": len("isoplug"),
    }


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_pythoninspect_never_reaches_a_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """``PYTHONINSPECT``, even with the whole host environment let through, stays out: under
    it a runner's ``sys.exit(0)`` became an interactive prompt, and its stop exit code 1."""
    monkeypatch.setenv("PYTHONINSPECT", "1")
    plugins = tmp_path / "plugins"
    add_probe(plugins, "probe", f'start = "{start}"')
    config = dataclasses.replace(FAST, inherit_environment=True)
    async with Host(plugins, config=config) as host:
        await host.wait_ready(60)
        assert "PYTHONINSPECT" not in (await host.call("probe", "itself"))["environ"]
        info = await host.stop("probe")
    assert info.last_exit is not None and info.last_exit.returncode == 0, info.last_exit


def test_a_manifest_setting_pythoninspect_is_refused(tmp_path: Path) -> None:
    add_probe(tmp_path, "probe", '[environment]\nPYTHONINSPECT = "1"')
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "probe")
    assert "field 'environment.PYTHONINSPECT': is never passed to a runner" in str(caught.value)


@pytest.mark.slow
def test_a_normally_installed_hosts_packages_never_reach_a_plugins_programs(
    tmp_path: Path,
) -> None:
    """isoplug installed normally: the runners' ``PYTHONPATH`` holds the host's whole
    ``site-packages``. A program of another interpreter (a plugin's venv here) that a plugin
    starts imports its own packages, not the host's, and sees no ``PYTHONPATH``, forked,
    spawned or on the plugin's own interpreter. A child given ``ctx.log_child_env()`` still
    imports the runner's isoplug, even on an interpreter that has none."""
    host_site = make_venv(tmp_path / "hostvenv")
    install_copy(isoplug, host_site)
    install_copy(msgspec, host_site)
    (host_site / "shadowme.py").write_text('WHO = "host"\n')
    plugin_venv = tmp_path / "pluginvenv"
    plugin_site = make_venv(plugin_venv)
    install_copy(msgspec, plugin_site)
    (plugin_site / "shadowme.py").write_text('WHO = "plugin venv"\n')
    plugins = tmp_path / "plugins"
    starts = {"forked": "", "spawned": 'start = "spawn"', "own": f'python = "{plugin_venv}"'}
    for plugin_id, manifest in starts.items():
        add_probe(plugins, plugin_id, manifest)
    script = tmp_path / "host.py"
    script.write_text(_HOST_SCRIPT)
    other = {"OTHER_PYTHON": str(plugin_venv / "bin" / "python")}
    result = run_in_venv(
        tmp_path / "hostvenv", script, str(plugins), *starts, cwd=tmp_path, env=other
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    host_isoplug = str((host_site / "isoplug" / "__init__.py").resolve())
    for plugin_id in starts:
        assert seen[plugin_id] == ["plugin venv, PYTHONPATH None", host_isoplug], plugin_id


#: A host in another venv: for each plugin named, what a program of OTHER_PYTHON it starts
#: imports, and where such a program given the plugin's log environment imports isoplug from.
_HOST_SCRIPT = """
import asyncio, json, os, sys
import isoplug

SHADOW = (
    "import os, shadowme; "
    "print(shadowme.WHO + ', PYTHONPATH ' + str(os.environ.get('PYTHONPATH')))"
)
ISOPLUG = "import os, isoplug; print(os.path.realpath(isoplug.__file__))"

async def main():
    other = os.environ["OTHER_PYTHON"]
    async with isoplug.Host(sys.argv[1]) as host:
        await host.wait_ready(timeout=60)
        seen = {
            plugin: [
                await host.call(plugin, "child_sees", other, SHADOW),
                await host.call(plugin, "child_sees", other, ISOPLUG, True),
            ]
            for plugin in sys.argv[2:]
        }
    print(json.dumps(seen))

asyncio.run(main())
"""
