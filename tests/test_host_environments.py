"""A Host embedded in a process started with descriptor 2 closed, or under Python's strictest
warnings: it runs as it does anywhere else (runners forked by its zygote, nothing logged
about itself)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug import Host, PluginFailed
from tests.plugins_fixtures import FAST, plugins_dir
from tests.processes import child_env

CHILD = Path(__file__).parent / "env_host_child.py"


def run_host_child(
    *arguments: str, shell: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """tests/env_host_child.py with ``arguments``, started by ``sh`` with ``shell`` after the
    command (``2>&-``)."""
    return subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {shell}', sys.executable, str(CHILD), *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="backslashreplace",
        timeout=60,
        check=False,
        env=child_env(**env),
    )


def host_said(log: str) -> list[str]:
    """isoplug's own records above INFO."""
    return re.findall(r"^(?:WARNING|ERROR|CRITICAL) isoplug.*$", log, re.MULTILINE)


@pytest.mark.parametrize(
    ("options", "app_log"),
    [([], False), (["--log-file"], True), (["--close-stderr"], False)],
    ids=["started-with-2-closed", "app-log-file-on-2", "2-closed-at-host-start"],
)
def test_a_host_without_a_stderr_runs_as_usual(
    tmp_path: Path, options: list[str], app_log: bool
) -> None:
    """`python app.py 2>&-`: the zygote, whose stderr is its own whatever the host's fd 2
    is (the event loop's epoll, the application's log file: close-on-exec, and so closed in
    a child), forks the runners; and no socket of the host's becomes fd 2: closed when the
    host starts, it is /dev/null from then on."""
    log_file = tmp_path / "app.log"
    arguments = [str(plugins_dir(tmp_path, "echo")), *options]
    if app_log:
        arguments.append(str(log_file))
    # Started with 2 closed, the event loop's epoll takes it: closing it then would end the
    # loop, so that case starts with a stderr, closed right before the host starts.
    result = run_host_child(*arguments, shell="" if "--close-stderr" in options else "2>&-")
    log = log_file.read_text(encoding="utf-8") if app_log else result.stdout
    assert result.returncode == 0, log
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["result"] == "x"
    assert summary["runner_parents"] == [summary["zygote"]]
    assert host_said(log) == []
    if summary["stderr_at_start"] is None:
        assert summary["stderr_at_end"] == "/dev/null"
    else:
        assert summary["stderr_at_end"] == summary["stderr_at_start"]
    if app_log:
        assert summary["stderr_at_start"] == str(log_file)
    if "--close-stderr" in options:
        assert summary["stderr_at_start"] is None


def test_a_host_under_the_strictest_warnings_runs_as_usual(tmp_path: Path) -> None:
    """PYTHONWARNDEFAULTENCODING=1 PYTHONWARNINGS=error (its runners get them too): no text
    file of isoplug's is opened without an encoding, which would raise EncodingWarning (the
    host's watch of every runner's process tree failed on one)."""
    result = run_host_child(
        str(plugins_dir(tmp_path, "echo")), PYTHONWARNDEFAULTENCODING="1", PYTHONWARNINGS="error"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["result"] == "x"
    assert host_said(result.stdout) == []
    assert "EncodingWarning" not in result.stdout + result.stderr


async def test_an_environment_too_large_for_the_kernel_fails_the_plugin_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One variable let through past the kernel's 128 KiB: no start can work, so the plugin
    fails at once (not after a crash loop), and its error names the variable."""
    monkeypatch.setenv("HUGE", "x" * 200_000)
    config = dataclasses.replace(FAST, inherit_environment=("HUGE",))
    async with Host(plugins_dir(tmp_path, "echo"), config=config) as host:
        with pytest.raises(PluginFailed):
            await host.wait_ready(20)
        info = host.plugin("echo")
    assert info.restarts == 0, info
    assert "its environment is too large for the kernel to start it" in (info.error or "")
    assert "the largest 'HUGE' (200,000 characters)" in (info.error or "")
