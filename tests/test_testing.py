"""isoplug.testing as plugin authors use it: a real runner under a real host, records picked by
plugin, level and stream, fake and refused capabilities, a crash; `isoplug new` and its test;
`isoplug run` on one plugin's folder."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from isoplug import CapabilityDenied, IsoplugError, PluginState
from isoplug.cli import main
from isoplug.testing import BlockingHarness, PluginHarness
from tests.processes import run_interpreter

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "plugins"


async def test_harness_calls_publishes_and_picks_records_by_stream_and_level() -> None:
    async with PluginHarness(EXAMPLES / "chatty") as chatty:
        assert chatty.plugin_ids() == ["chatty"]
        assert await chatty.call("shout", text="hi") == "HI!"
        assert await chatty.publish("tick", {"n": 1}) == 1
        debug = await chatty.wait_for_record(plugin="chatty", level="DEBUG", text="got tick")
        assert debug.levelno == logging.DEBUG and debug.name.startswith("plugin.chatty")
        printed = await chatty.wait_for_record(plugin="chatty", stream="stdout", text="line 1")
        assert printed.name == "plugin.chatty.stdout"
        await chatty.wait_for_record(plugin="chatty", stream="stderr", timeout=10)
        assert not chatty.records.select(plugin="chatty", level=logging.ERROR)
        with pytest.raises(TimeoutError, match=r"no record with plugin='chatty', text='never'"):
            await chatty.wait_for_record(plugin="chatty", text="never", timeout=0.2)


async def test_fake_capability_is_called_and_a_denied_one_refused() -> None:
    async with PluginHarness(
        EXAMPLES / "clock_reader", capabilities={"clock.now": lambda: 42.0}
    ) as clock:
        assert await clock.call("host_time") == 42.0
        assert clock.capability_calls[-1].name == "clock.now"
    async with PluginHarness(EXAMPLES / "clock_reader", deny=["clock.now"]) as refused:
        with pytest.raises(IsoplugError, match=r"capability .clock\.now. is denied by the test"):
            await refused.call("host_time")
    assert issubclass(CapabilityDenied, IsoplugError)


async def test_crash_kills_the_runner_and_waits_for_the_restart() -> None:
    async with PluginHarness(EXAMPLES / "chatty") as chatty:
        before = chatty.info()
        after = await chatty.crash()
        assert after.state is PluginState.READY and after.restarts == before.restarts + 1
        assert after.pid != before.pid
        assert after.last_exit is not None and "SIGKILL" in after.last_exit.describe()
        assert await chatty.call("shout", text="back") == "BACK!"


def test_blocking_harness_through_the_pytest_fixture(isoplug_host: object) -> None:
    start = isoplug_host
    assert callable(start)
    chatty = start(EXAMPLES)  # a folder of plugins works too
    assert isinstance(chatty, BlockingHarness)
    assert chatty.call("shout", text="sync", plugin="chatty") == "SYNC!"
    with pytest.raises(ValueError, match="several plugins run"):
        chatty.call("shout", text="which?")


def test_isoplug_new_makes_a_plugin_whose_test_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "weather_report"
    assert main(["new", str(target)]) == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "plugin.toml",
        "test_weather_report.py",
        "weather_report.py",
    ]
    assert "python -m pytest" in capsys.readouterr().out
    assert main(["new", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    for bad in ("9lives", "with-dash", "class"):
        assert main(["new", str(tmp_path / bad)]) == 2
        assert "cannot name a plugin" in capsys.readouterr().err
        assert not (tmp_path / bad).exists()
    result = run_interpreter(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


async def test_isoplug_run_accepts_one_plugin_folder(tmp_path: Path) -> None:
    assert main(["new", str(tmp_path / "greeter")]) == 0
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isoplug",
        "run",
        str(tmp_path / "greeter"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert cli.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("greeter is set up" in line for line in seen):
                line = (await cli.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
    finally:
        cli.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    output = "".join(seen) + rest.decode()
    assert cli.returncode == 0, output
    assert "running 1 plugin(s) from" in output and "all plugins stopped" in output


def test_a_pytest_run_that_uses_no_fixture_of_isoplug_imports_no_host(tmp_path: Path) -> None:
    """pytest loads isoplug's plugin in every session of the environment, and rewrites each
    isoplug module it imports: a suite that tests no plugin gets the plugin and its zygote
    switch, not the host's few hundred modules."""
    (tmp_path / "test_unrelated.py").write_text(
        "import json, sys\n\n"
        "def test_nothing_of_isoplug():\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('isoplug'))\n"
        "    from isoplug.testing import share_zygotes\n"
        "    report = {'loaded': loaded, 'sharing': share_zygotes(True)}\n"
        f"    open({str(tmp_path / 'report.json')!r}, 'w').write(json.dumps(report))\n"
    )
    result = run_interpreter(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_unrelated.py", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert "isoplug.testing.pytest_plugin" in report["loaded"]  # the plugin did load
    assert report["sharing"] is True  # and turned sharing on for the session's hosts
    assert not [m for m in report["loaded"] if m.startswith("isoplug.host")], report["loaded"]
    # The bare package (its version in isoplug.release), errors, lazy names, the plugin,
    # testing and the zygote switch.
    assert len(report["loaded"]) <= 7, report["loaded"]
