"""A runner whose plugins could not be loaded (the module raised at import, its entry is
missing, its configuration is refused, its ``setup`` raised) ends what their imports started
as a stop does: a non-daemon thread the import started is waited for until the teardown
timeout, then named in a WARNING, and the runner exits on its own with its code, what the
plugin logged and printed before it failed delivered; the host does not have to kill it.
In a group, a plugin that loads keeps its runner, the failed one's thread with it."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.control import EXIT_NOTHING_LOADED, EXIT_SETUP_FAILED
from isoplug.host import ExitAccount, PluginState
from tests.plugins_fixtures import SHORT_TEARDOWN, process_alive
from tests.record_waiter import RecordWaiter, eventually, watching

#: The host would wait shutdown_timeout before its kill: far longer than the teardown.
CONFIG = SHORT_TEARDOWN
#: Seconds from the start until the runner's exit at most here: its start and the teardown
#: timeout plus a slow machine's slack, well below shutdown_timeout.
WITHIN = 15.0
#: How long the tests wait for the exit: past the host's kill, so that a runner that does
#: not exit on its own fails on its account (killed by the host), not on the wait.
EXIT_WAIT = CONFIG.shutdown_timeout + WITHIN

#: What every plugin module here does at import before it fails: starts a non-daemon thread
#: that never ends (once it logged), logs, prints, and writes a line it does not finish.
IMPORT_STARTS_A_THREAD = """\
import logging, sys, threading, time

import msgspec

import isoplug

_log = logging.getLogger(__name__)
_started = threading.Event()


def forever() -> None:
    _log.info("thread running")
    _started.set()
    while True:
        time.sleep(0.05)


threading.Thread(target=forever, name="{id}-forever").start()
_started.wait()
_log.warning("imported, about to fail")
print("printed at import")
sys.stdout.write("an unfinished line")
"""

#: How each plugin fails after that: (module tail, entry attribute, plugin.toml tail).
FAILURES = {
    "import": ("raise RuntimeError('libfoo 2.0 is missing')\n", "Plugin", ""),
    "entry": ("class Other(isoplug.Plugin):\n    pass\n", "Missing", ""),
    "config": (
        "class Settings(msgspec.Struct):\n    n: int\n\n\n"
        "class Configured(isoplug.Plugin):\n    config_schema = Settings\n",
        "Configured",
        "[config]\nn = 'not a number'\n",
    ),
    "setup": (
        "class Crashing(isoplug.Plugin):\n"
        "    async def setup(self, ctx: isoplug.PluginContext) -> None:\n"
        "        raise RuntimeError('the database is unreachable')\n",
        "Crashing",
        "",
    ),
    "none": (
        "class Fine(isoplug.Plugin):\n"
        "    @isoplug.method\n"
        "    async def hello(self) -> str:\n"
        "        return 'hello'\n",
        "Fine",
        "",
    ),
}
#: What the host says of each failure (its error text), as a pattern.
SAID = {
    "import": r"importing '\w+' raised RuntimeError: libfoo 2\.0 is missing\nTraceback",
    "entry": r"has no attribute 'Missing'",
    "config": r"config field 'n': must be an integer",
    "setup": r"setup\(\) raised RuntimeError: the database is unreachable\nTraceback",
}


def write_plugin(plugins: Path, plugin_id: str, failure: str, group: str | None = None) -> None:
    module_tail, attribute, toml_tail = FAILURES[failure]
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    module = "import isoplug\n\n\n" + module_tail
    if failure != "none":
        module = IMPORT_STARTS_A_THREAD.format(id=plugin_id) + "\n\n" + module_tail
    (folder / f"{plugin_id}_mod.py").write_text(module)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "0.1"\nentry = "{plugin_id}_mod:{attribute}"\n'
        + (f'group = "{group}"\n' if group else "")
        + '[restart]\npolicy = "never"\n'
        + toml_tail
    )


def thread_warnings(waiter: RecordWaiter, runner: str) -> list[logging.LogRecord]:
    return [
        r
        for r in waiter.matching(f"plugin.{runner}.isoplug.runner", "thread ")
        if "at shutdown" in r.getMessage()
    ]


def assert_delivered_before_failing(waiter: RecordWaiter, *plugin_ids: str) -> None:
    """What the imports of ``plugin_ids`` logged and printed arrived, the line they did not
    finish too. Only their text is looked for: in a group runner, what is printed before a
    plugin's import fails may still be the group's."""
    for plugin_id in plugin_ids:
        module = f"{plugin_id}_mod"
        assert waiter.matching(f"plugin.{plugin_id}.{module}", "imported, about to fail")
        threads = [r for r in waiter.records if r.name.endswith(f".{module}")]
        assert "thread running" in [r.getMessage() for r in threads], waiter.messages()
    printed = "".join(r.getMessage() for r in waiter.records if r.name.endswith(".stdout"))
    for text in ("printed at import", "an unfinished line"):
        assert printed.count(text) == len(plugin_ids), waiter.messages()


def assert_thread_named(warning: logging.LogRecord, plugin_id: str) -> None:
    assert warning.levelno == logging.WARNING
    assert re.search(
        rf"thread '{plugin_id}-forever' \({plugin_id}_mod\.forever\) is still running at "
        rf"shutdown and had not ended by the teardown timeout .* it is at "
        rf"\S+{plugin_id}_mod\.py:\d+ in forever; the runner exits without it",
        warning.getMessage(),
    ), warning.getMessage()


def assert_exited_on_its_own(account: ExitAccount | None, code: int, took: float) -> None:
    assert account is not None
    assert (account.returncode, account.sent_by_host) == (code, None), account.describe()
    assert took < WITHIN, (took, account.describe())
    assert not process_alive(account.pid)


@pytest.mark.parametrize("failure", ["import", "entry", "config", "setup"])
async def test_a_runner_that_loads_no_plugin_is_not_held_by_a_thread_its_import_started(
    tmp_path: Path, failure: str
) -> None:
    write_plugin(tmp_path / "plugins", "failing", failure)
    with watching("plugin") as waiter:
        start = time.monotonic()
        async with Host(tmp_path / "plugins", config=CONFIG) as host:
            await host.wait_ready(20, raise_on_failure=False)
            await eventually(lambda: host.plugin("failing").last_exit is not None, EXIT_WAIT)
            took = time.monotonic() - start
            info = host.plugin("failing")
    assert info.state is PluginState.FAILED
    assert re.search(SAID[failure], info.error or ""), info.error
    code = EXIT_SETUP_FAILED if failure == "setup" else EXIT_NOTHING_LOADED
    assert_exited_on_its_own(info.last_exit, code, took)
    assert_delivered_before_failing(waiter, "failing")
    (warning,) = thread_warnings(waiter, "failing")
    assert_thread_named(warning, "failing")


async def test_in_a_group_the_plugins_that_load_keep_running(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "broken", "import", group="pair")
    write_plugin(plugins, "working", "none", group="pair")
    with watching("plugin") as waiter:
        async with Host(plugins, config=CONFIG) as host:
            await host.wait_ready(20, raise_on_failure=False)
            assert host.plugin("broken").state is PluginState.FAILED
            assert await host.call("working", "hello") == "hello"
            assert host.plugin("working").state is PluginState.READY
            assert not thread_warnings(waiter, "pair")
            start = time.monotonic()
            info = await host.stop("working")
            took = time.monotonic() - start
    assert info.last_exit is not None
    assert (info.last_exit.returncode, info.last_exit.sent_by_host) == (0, None)
    assert took < WITHIN, (took, info.last_exit.describe())
    assert_delivered_before_failing(waiter, "broken")
    # The import that started the thread was broken's: so is the thread.
    assert not thread_warnings(waiter, "pair")
    (warning,) = thread_warnings(waiter, "broken")
    assert_thread_named(warning, "broken")


async def test_in_a_group_whose_plugins_all_fail_every_thread_is_named(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "first", "import", group="pair")
    write_plugin(plugins, "second", "config", group="pair")
    with watching("plugin") as waiter:
        start = time.monotonic()
        async with Host(plugins, config=CONFIG) as host:
            await host.wait_ready(20, raise_on_failure=False)
            await eventually(lambda: host.plugin("first").last_exit is not None, EXIT_WAIT)
            took = time.monotonic() - start
            infos = [host.plugin("first"), host.plugin("second")]
    assert [info.state for info in infos] == [PluginState.FAILED] * 2
    assert re.search(SAID["import"], infos[0].error or ""), infos[0].error
    assert re.search(SAID["config"], infos[1].error or ""), infos[1].error
    assert_exited_on_its_own(infos[0].last_exit, EXIT_NOTHING_LOADED, took)
    assert_delivered_before_failing(waiter, "first", "second")
    assert not thread_warnings(waiter, "pair")
    for plugin_id in ("first", "second"):
        (warning,) = thread_warnings(waiter, plugin_id)
        assert_thread_named(warning, plugin_id)
