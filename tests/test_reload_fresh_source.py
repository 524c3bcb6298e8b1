"""A runner runs its plugin's source as it is on disk when it starts, never an older
``__pycache__`` file: real hosts and runners, forked, spawned and on the plugin's own
interpreter, after a hot reload, a ``host.restart()`` and a crash's restart.

Python trusts a ``.pyc`` whose header matches the source's modification time in whole seconds
and its size. Two saves of the same size within one second leave such a ``.pyc`` of the first
save; the tests make that state on disk without waiting on the clock: the times a real race
gives are set with ``os.utime`` (the first save at .1 s into a second long past, its ``.pyc``
written at .4 s, the second save at .8 s).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import FAST, eventually
from tests.plugins_fixtures import reloading

SOURCE = """
import os
import isoplug

V = {value}

class Fresh(isoplug.Plugin):
    @isoplug.method
    def version(self) -> int:
        return V

    @isoplug.method
    def crash(self) -> None:
        os._exit(3)
"""

NS = 1_000_000_000
#: A whole second long past: the first save's.
SECOND = (int(time.time()) - 1000) * NS


@pytest.fixture(autouse=True)
def _bytecode_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runners get the host's PYTHONDONTWRITEBYTECODE (a test environment may set it):
    # without it, as users run, each start writes the .pyc the race leaves behind.
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


def write_plugin(directory: Path, extra: str = "") -> Path:
    """The plugin ``fresh`` saved with ``V = 2`` at .1 s into :data:`SECOND`; its module."""
    folder = directory / "fresh"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "fresh"\nversion = "1"\nentry = "fresh_plugin:Fresh"\n{extra}\n'
        "[restart]\nbackoff_initial = 0.05\n"
    )
    module = folder / "fresh_plugin.py"
    save(module, 2, 100)
    return module


def save(module: Path, value: int, at_ms: int, *, atomically: bool = False) -> None:
    """``V = value`` saved at ``at_ms`` into :data:`SECOND` (same size for every digit);
    ``atomically``: written beside it and renamed over it, as editors save, so that a watcher
    sees it only with its time set."""
    written = module.with_name(module.name + ".saving") if atomically else module
    written.write_text(SOURCE.format(value=value))
    os.utime(written, ns=(SECOND + at_ms * 1_000_000,) * 2)
    if atomically:
        written.replace(module)


def pyc_written_in_the_same_second(module: Path) -> Path:
    """The first save's ``.pyc``, as the runner that imported it wrote it, its time set to
    .4 s into :data:`SECOND`: written right after that save, before the next."""
    pyc = Path(importlib.util.cache_from_source(str(module)))
    assert pyc.is_file(), "the runner wrote no .pyc: is PYTHONDONTWRITEBYTECODE still set?"
    os.utime(pyc, ns=(SECOND + 400_000_000,) * 2)
    return pyc


#: How the runner starts: forked by the zygote, spawned, or on the plugin's own interpreter.
STARTS = {
    "forked": "",
    "spawned": 'start = "spawn"',
    "own python": f"python = {str(Path(sys.executable).absolute())!r}",
}


@pytest.mark.parametrize(
    ("start", "restart"),
    [("forked", "restart"), ("spawned", "crash"), ("own python", "restart"), ("forked", "crash")],
)
async def test_a_restart_runs_the_source_saved_in_the_second_of_the_pyc(
    tmp_path: Path, start: str, restart: str
) -> None:
    """With hot reload off: an edit the host never saw, then ``host.restart()`` (or a crash,
    and the restart after it) runs the edit. The ``.pyc`` is written again, and trusted from
    then on (bytecode caching holds): the next restart does not write it again."""
    module = write_plugin(tmp_path / "plugins", STARTS[start])
    async with Host(tmp_path / "plugins", config=FAST) as host:
        await host.wait_ready(20)
        assert await host.call("fresh", "version") == 2
        pyc = pyc_written_in_the_same_second(module)
        save(module, 3, 800)
        if restart == "restart":
            await host.restart("fresh")
        else:
            pid = host.plugin("fresh").pid
            with pytest.raises(Exception):  # noqa: B017, PT011 (the runner's end, as it comes)
                await host.call("fresh", "crash")
            await eventually(lambda: host.plugin("fresh").pid not in (None, pid))
            await host.wait_ready(20)
        assert await host.call("fresh", "version") == 3
        rewritten = pyc.stat().st_mtime_ns
        assert rewritten // NS > SECOND // NS
        await host.restart("fresh")
        assert await host.call("fresh", "version") == 3
        assert pyc.stat().st_mtime_ns == rewritten


async def test_a_hot_reload_runs_the_second_save_of_a_second(tmp_path: Path) -> None:
    """Under hot reload, a save of the same size within the second of the previous one (whose
    runner wrote its ``.pyc``) restarts the runner into the new code."""
    pytest.importorskip("watchfiles")
    module = write_plugin(tmp_path / "plugins")
    async with reloading(tmp_path / "plugins") as host:
        assert await host.call("fresh", "version") == 2
        pid = host.plugin("fresh").pid
        pyc_written_in_the_same_second(module)
        save(module, 3, 800, atomically=True)
        await eventually(
            lambda: (
                host.plugin("fresh").pid not in (None, pid)
                and host.plugin("fresh").state.value == "ready"
            )
        )
        assert await host.call("fresh", "version") == 3
