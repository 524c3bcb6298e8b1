"""A runner forked from the host's zygote gets what a spawned one gets, and nothing of another
runner's: no other runner's environment in its memory (none passes through the zygote), the
time zone, umask and resource limits of its own start, and a spawn where only a fresh
process can honour its settings (``PYTHON*``, locale, dynamic loader and C library variables
that differ from the zygote's). The zygote leaves nothing unclosed behind when its host lets
it go."""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host
from isoplug.host.zygote import fork_supported
from isoplug.host.zygote_process import ZygoteProcess
from tests.plugins_fixtures import FAST
from tests.probe_plugins import hash_under_seed, write_probe
from tests.process_memory import environment_block_holds, memory_holds, parent_of

pytestmark = [
    pytest.mark.skipif(not fork_supported(), reason="runners are spawned here"),
    # A zygote of each host's own: what it holds is this test's alone.
    pytest.mark.usefixtures("isoplug_own_zygotes"),
]

_PROBE = """
import ctypes
import gc
import logging
import os
import sys
import time
import types

import isoplug


class Probe(isoplug.Plugin):
    @isoplug.method
    def facts(self) -> dict:
        return {
            "environ": dict(os.environ),
            "tzname": list(time.tzname),
            "timezone": time.timezone,
            "hash": hash("isoplug"),
        }

    @isoplug.method
    def collector(self) -> dict:
        frozen = gc.get_freeze_count()
        seen = {id(o) for o in gc.get_objects() if isinstance(o, types.ModuleType)}
        modules = {id(m) for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)}
        return {
            "frozen": frozen,
            "unseen_modules": len(modules - seen),
            "referrers": any(r is sys.modules for r in gc.get_referrers(logging)),
        }

    @isoplug.method
    def native(self, library: str | None) -> int | str:
        try:
            return ctypes.CDLL(library).isoplug_check()
        except (OSError, AttributeError) as exc:
            return f"{type(exc).__name__}: {exc}"
"""


def add_probe(plugins: Path, plugin_id: str, manifest: str = "") -> None:
    """A plugin ``plugin_id`` in ``plugins`` that tells what its runner has (``facts``);
    ``manifest``: more lines of its plugin.toml."""
    write_probe(plugins, plugin_id, _PROBE, manifest)


def zygote_of(host: Host) -> ZygoteProcess:
    process = host._zygote._process  # type: ignore[union-attr]
    assert process is not None
    return process


async def facts(host: Host, plugin_id: str) -> dict[str, Any]:
    answer = await host.call(plugin_id, "facts")
    assert isinstance(answer, dict)
    return answer


async def test_a_forked_runner_holds_no_other_runners_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment a manifest gives one runner (from ``inherit_environment`` and
    ``[environment]``) is found neither in the memory of a runner forked after it, nor in the
    zygote's, nor in their environment blocks: it reaches the runner on its own stdin."""
    inherited = f"inherited-by-victim-{secrets.token_hex(12)}"
    own = f"set-for-victim-{secrets.token_hex(12)}"
    monkeypatch.setenv("ISOPLUG_TEST_VICTIM_SECRET", inherited)
    plugins = tmp_path / "plugins"
    add_probe(
        plugins,
        "victim",
        f'inherit_environment = ["ISOPLUG_TEST_VICTIM_SECRET"]\n'
        f'[environment]\nISOPLUG_TEST_VICTIM_KEY = "{own}"',
    )
    add_probe(plugins, "reader")
    needles = [inherited.encode(), own.encode()]
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        zygote = zygote_of(host).pid
        victim = host.plugin("victim").pid
        assert victim is not None and parent_of(victim) == zygote
        environ = (await facts(host, "victim"))["environ"]
        assert environ["ISOPLUG_TEST_VICTIM_SECRET"] == inherited
        assert environ["ISOPLUG_TEST_VICTIM_KEY"] == own
        # Forked after the victim's runner, from the same zygote.
        await host.restart("reader")
        reader = host.plugin("reader").pid
        assert reader is not None and parent_of(reader) == zygote
        assert "ISOPLUG_TEST_VICTIM_KEY" not in (await facts(host, "reader"))["environ"]
        for pid in (reader, zygote):
            assert memory_holds(pid, needles) == set(), f"pid {pid}"
            assert environment_block_holds(pid, needles) == set(), f"pid {pid}"


async def test_a_forked_runner_reads_its_own_time_zone(tmp_path: Path) -> None:
    """``TZ`` in ``[environment]``: the forked runner's ``time`` module follows it, as a spawned
    runner's does (a POSIX rule, which needs no time zone database)."""
    plugins = tmp_path / "plugins"
    add_probe(plugins, "zoned", '[environment]\nTZ = "ABC-5"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("zoned").pid
        assert pid is not None and parent_of(pid) == zygote_of(host).pid
        seen = await facts(host, "zoned")
        assert seen["environ"]["TZ"] == "ABC-5"
        assert (seen["tzname"], seen["timezone"]) == (["ABC", "ABC"], -5 * 3600)


@pytest.fixture
def host_umask_and_open_files() -> Iterator[None]:
    """The test changes the process's umask and its soft ``RLIMIT_NOFILE``: put them back."""
    umask = os.umask(0o022)
    os.umask(umask)
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    os.umask(umask)
    resource.setrlimit(resource.RLIMIT_NOFILE, open_files)


def _umask_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no Umask line in /proc/{pid}/status")


@pytest.mark.usefixtures("host_umask_and_open_files")
async def test_a_forked_runner_gets_the_hosts_umask_and_limits_at_its_fork(
    tmp_path: Path,
) -> None:
    """The host tightens its umask and lowers a resource limit after its zygote started: the
    runners it forks from then on have them, as spawned ones would."""
    plugins = tmp_path / "plugins"
    add_probe(plugins, "probe")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        zygote = zygote_of(host).pid
        umask = os.umask(0o077)
        if umask == 0o077:
            os.umask(0o027)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        await host.restart("probe")
        pid = host.plugin("probe").pid
        assert pid is not None and parent_of(pid) == zygote
        assert _umask_of(pid) == _umask_of(os.getpid()) != umask
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (soft - 1, hard)


async def test_a_python_variable_the_host_changed_since_the_zygote_started_spawns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote starts with the host's ``PYTHONHASHSEED``, so a runner it forks hashes with
    it. Once the host's changes, only an interpreter's start can honour the new one: the runner
    started then is spawned, and hashes with it."""
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    first, then = await asyncio.gather(
        asyncio.to_thread(hash_under_seed, "123"), asyncio.to_thread(hash_under_seed, "456")
    )
    plugins = tmp_path / "plugins"
    add_probe(plugins, "seeded")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        forked = host.plugin("seeded").pid
        assert forked is not None and parent_of(forked) == zygote_of(host).pid
        assert (await facts(host, "seeded"))["hash"] == first
        monkeypatch.setenv("PYTHONHASHSEED", "456")
        spawned = (await host.restart("seeded")).pid
        assert spawned is not None and parent_of(spawned) == os.getpid()
        assert (await facts(host, "seeded"))["hash"] == then


async def test_a_locale_other_than_the_zygotes_spawns(tmp_path: Path) -> None:
    """The interpreter fixes its encodings (UTF-8 mode, file system, stdio) from the locale at
    its start: a runner whose locale variables differ from the zygote's is spawned."""
    plugins = tmp_path / "plugins"
    other = "POSIX" if os.environ.get("LC_ALL") == "C" else "C"
    add_probe(plugins, "ascii", f'[environment]\nLC_ALL = "{other}"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("ascii").pid
        assert pid is not None and parent_of(pid) == os.getpid()


#: A native library the dynamic loader must find through what it reads at exec.
_LIBRARY = "libisoplugcheck.so"


@pytest.fixture
def native_library(tmp_path: Path) -> Path:
    """A shared library defining ``isoplug_check()`` (42), built with the system's C
    compiler; the test is skipped where there is none."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a shared library with")
    source = tmp_path / "check.c"
    source.write_text("int isoplug_check(void) { return 42; }\n")
    library = tmp_path / "lib" / _LIBRARY
    library.parent.mkdir()
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=120
    )
    return library


@pytest.mark.parametrize("way", ["environment", "inherit_environment"])
async def test_the_loaders_variables_reach_a_runner_as_at_an_exec(
    tmp_path: Path, native_library: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """The dynamic loader reads ``LD_LIBRARY_PATH`` and ``LD_PRELOAD`` only at ``exec``: a
    runner given them (by ``[environment]``, or by ``inherit_environment`` from the host) is
    spawned, and loads the library they point at, as a spawned runner would."""
    plugins = tmp_path / "plugins"
    if way == "environment":
        add_probe(plugins, "native", f'[environment]\nLD_LIBRARY_PATH = "{native_library.parent}"')
        library: str | None = _LIBRARY
    else:
        monkeypatch.setenv("LD_PRELOAD", str(native_library))
        add_probe(plugins, "native", 'inherit_environment = ["LD_PRELOAD"]')
        library = None  # the process's own symbols, the preloaded library's among them
    add_probe(plugins, "plain")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        assert await host.call("native", "native", library) == 42
        pid = host.plugin("native").pid
        assert pid is not None and parent_of(pid) == os.getpid()
        plain = host.plugin("plain").pid
        assert plain is not None and parent_of(plain) == zygote_of(host).pid


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1"),
        ("MALLOC_ARENA_MAX", "1"),
        ("LD_BIND_NOW", "1"),
        ("OPENSSL_CONF", "/dev/null"),
    ],
)
async def test_a_variable_the_c_library_reads_at_its_start_spawns(
    tmp_path: Path, name: str, value: str
) -> None:
    """The C library's tunables, the loader's settings and OpenSSL's configuration (loaded
    when the zygote imported ``ssl``) are read once, at a process's start: a runner whose
    value differs from the zygote's is spawned (its parent is the host)."""
    plugins = tmp_path / "plugins"
    add_probe(plugins, "tuned", f'[environment]\n{name} = "{value}"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("tuned").pid
        assert pid is not None and parent_of(pid) == os.getpid()
        assert (await facts(host, "tuned"))["environ"][name] == value


async def test_a_leak_hunt_sees_every_object_of_a_forked_runner(tmp_path: Path) -> None:
    """The zygote's objects are frozen (``gc.freeze()``), which ``gc.get_objects()`` and
    ``gc.get_referrers()`` do not see: the first such call in a forked runner unfreezes them,
    so that objgraph or pympler see what they see in a spawned runner (every module, the
    referrers of one). Until then they stay frozen, their pages shared with the zygote."""
    plugins = tmp_path / "plugins"
    add_probe(plugins, "forked")
    add_probe(plugins, "spawned", 'start = "spawn"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        forked = host.plugin("forked").pid
        assert forked is not None and parent_of(forked) == zygote_of(host).pid
        seen = {p: await host.call(p, "collector") for p in ("forked", "spawned")}
    assert seen["forked"]["frozen"] > 0
    for plugin_id in ("forked", "spawned"):
        assert seen[plugin_id]["unseen_modules"] == 0, seen
        assert seen[plugin_id]["referrers"], seen


async def test_the_zygote_leaves_no_unclosed_socket_at_its_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under ``PYTHONDEVMODE=1`` (which the zygote inherits) a socket left for the collector
    would be reported on the host's stderr, which the zygote shares, at every host's close."""
    monkeypatch.setenv("PYTHONDEVMODE", "1")
    plugins = tmp_path / "plugins"
    add_probe(plugins, "probe")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        zygote = zygote_of(host)
        pid = host.plugin("probe").pid
        assert pid is not None and parent_of(pid) == zygote.pid
    # Set once the zygote was reaped: whatever it wrote is in the captured stderr by then.
    assert await asyncio.to_thread(zygote.gone.wait, 20)
    assert "unclosed" not in capfd.readouterr().err
