"""A plugin that closes every descriptor above 2, as a daemonizing helper or an fd-cleanup loop
does, in its runner's own process: with ``os.closerange()`` it breaks the log connection,
nothing more (the runner keeps what it cannot work without, and serves on); below Python
(libc's ``close()``) the runner cannot go on, and ends saying so: exit code 6 with its words
where it finds them closed in time, else (uvloop, on the loop's thread) the abort of libuv's
assertion, which the exit account tells as the runner's own, not an unknown sender's. So does
any self-inflicted abort: a failed C assertion."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import os
import signal
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.control import EXIT_DESCRIPTORS_CLOSED
from isoplug.errors import ConnectionBroken
from isoplug.host import ExitAccount, PluginInfo
from isoplug.runner.eventloop import EVENT_LOOP_VARIABLE
from tests.plugins_fixtures import FAST, plugins_dir, running

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="no uvloop")),
]
#: A runner whose control connection closed gets its health timeout to exit: ample here, so
#: that only the runner's own exit ends it on a slow machine. The fixture's setup() reads
#: FDCLOSER_IN_SETUP.
CONFIG = dataclasses.replace(FAST, health_timeout=10.0, inherit_environment=("FDCLOSER_IN_SETUP",))
PLUGIN_LOGGER = "plugin.fdcloser.fdcloser"
RUNNER_LOGGER = "plugin.fdcloser.isoplug.runner"
#: What the runner says, before "(its event loop's: ...)".
CLOSED = "isoplug runner: the plugin closed descriptors the runner cannot work without ("


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("method", "start"),
    [
        ("close_everything", "fork"),
        ("close_everything", "spawn"),
        ("close_everything_on_the_loop", "fork"),
    ],
)
async def test_closerange_in_a_method_leaves_the_runners_own_and_it_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str, method: str, start: str
) -> None:
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    async with running(tmp_path, "fdcloser", config=CONFIG, start=start) as (host, waiter):
        pid = host.plugin("fdcloser").pid
        assert await host.call("fdcloser", method, "closerange") == pid
        await waiter.wait_for(PLUGIN_LOGGER, "closed every descriptor above 2 with closerange")
        kept = await waiter.wait_for(RUNNER_LOGGER, "left the runner's own descriptors open")
        await waiter.wait_for("plugin.fdcloser", "reconnected after its log connection broke")
        assert await host.call("fdcloser", "pid") == pid
        info = await host.stop("fdcloser")
    assert info.restarts == 0
    assert_stopped_cleanly(info.last_exit)
    message = kept.getMessage()
    assert message.startswith("the plugin's os.closerange(3, 1024) left the runner's own"), message
    for what in ("its control connection to the host: ", "its event loop's: ", "its health"):
        assert what in message, message
    assert not waiter.select(plugin="fdcloser", level="ERROR"), waiter.messages()


async def test_os_close_of_one_of_them_raises_ebadf_naming_whose(tmp_path: Path) -> None:
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, _):
        pid = host.plugin("fdcloser").pid
        fd, code, text = await host.call("fdcloser", "close_one_of_the_runners")
        assert code == errno.EBADF, text
        assert text.startswith(f"Bad file descriptor: {fd} is the isoplug runner's own (its "), text
        assert text.endswith("; a plugin cannot close it, and no program it runs inherits it")
        assert await host.call("fdcloser", "pid") == pid


@pytest.mark.parametrize("loop", LOOPS)
async def test_closerange_in_setup_leaves_the_runners_own_and_the_plugin_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    monkeypatch.setenv("FDCLOSER_IN_SETUP", "closerange")
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, waiter):
        pid = host.plugin("fdcloser").pid
        await waiter.wait_for(PLUGIN_LOGGER, "setup closed every descriptor above 2")
        assert await host.call("fdcloser", "pid") == pid
        info = await host.stop("fdcloser")
    assert info.restarts == 0
    assert_stopped_cleanly(info.last_exit)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_setup_closing_them_below_python_ends_its_runner_saying_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str, start: str
) -> None:
    """Found closed as setup() returns, before the loop polls again: exit code 6, with the
    runner's words quoted in the account, not an abort nor a loop's traceback."""
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    monkeypatch.setenv("FDCLOSER_IN_SETUP", "libc")
    async with Host(plugins_dir(tmp_path, "fdcloser", start=start), config=CONFIG) as host:
        info = await host.wait_for("fdcloser", lambda i: i.last_exit is not None, timeout=20)
    account = info.last_exit
    assert account is not None and account.exit_code == EXIT_DESCRIPTORS_CLOSED
    described = account.describe()
    assert "it exited before reporting ready; its stderr ended with: " in described, described
    assert_says_which(described)


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_def_method_closing_them_below_python_ends_its_runner_saying_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """The worker thread finds them closed before it wakes the loop with the outcome, or the
    loop's heartbeat does, between two polls."""
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, _):
        pid = host.plugin("fdcloser").pid
        with pytest.raises(ConnectionBroken):
            await host.call("fdcloser", "close_everything", "libc")
        info = await host.wait_for("fdcloser", lambda i: i.last_exit is not None, timeout=20)
    account = info.last_exit
    assert account is not None and account.pid == pid
    assert_ended_by_its_own_doing(account, loop)


@pytest.mark.parametrize("loop", LOOPS)
async def test_an_async_method_closing_them_below_python_ends_its_runner_as_its_own_doing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """On the loop's thread nothing looks before the loop polls (unless its heartbeat is due
    first): asyncio's poll fails, and the runner exits with code 6 saying which; uvloop's
    aborts on libuv's assertion, and the account says the runner raised that SIGABRT itself,
    quoting the assertion."""
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, _):
        with pytest.raises(ConnectionBroken):
            await host.call("fdcloser", "close_everything_on_the_loop", "libc")
        info = await host.wait_for("fdcloser", lambda i: i.last_exit is not None, timeout=20)
    account = info.last_exit
    assert account is not None
    assert_ended_by_its_own_doing(account, loop)


@pytest.mark.parametrize("loop", LOOPS)
async def test_the_loops_poller_replaced_by_another_epoll_ends_its_runner_saying_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """Every epoll has the same device and inode: the runner asks the kernel whether the
    number is still its loop's poller (kcmp). Unseen, the loop kept its timers, heard no
    socket, and every call timed out."""
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, loop)
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, _):
        pid = host.plugin("fdcloser").pid
        with contextlib.suppress(ConnectionBroken):  # the answer may come before the look
            await host.call("fdcloser", "replace_the_loops_poller")
        info = await host.wait_for("fdcloser", restarted, timeout=20)
        assert await host.call("fdcloser", "pid") == info.pid != pid
    account = info.last_exit
    assert account is not None and account.pid == pid
    assert account.exit_code == EXIT_DESCRIPTORS_CLOSED, account.describe()
    assert "(its event loop's: " in account.describe(), account.describe()


@pytest.mark.parametrize("faulthandler_on", [True, False], ids=["dump", "no-dump"])
async def test_a_failed_c_assertion_is_an_abort_of_the_runners_own_and_an_outside_one_is_not(
    tmp_path: Path, faulthandler_on: bool
) -> None:
    """Its words right before faulthandler's dump, or, faulthandler off (the runner turns it
    off as it exits for closed descriptors, and uvloop's loop may abort on libuv's assertion
    then), last on its stderr. Words a process went on after (a child's) do not count: an
    outside SIGABRT then stays an unknown sender's."""
    async with running(tmp_path, "fdcloser", config=CONFIG) as (host, _):
        with pytest.raises(ConnectionBroken):
            await host.call("fdcloser", "fail_a_c_assertion", faulthandler_on)
        info = await host.wait_for("fdcloser", restarted, timeout=20)
        own = info.last_exit
        await host.call("fdcloser", "outlive_a_childs_assertion", faulthandler_on)
        assert info.pid is not None
        os.kill(info.pid, signal.SIGABRT)
        info = await host.wait_for("fdcloser", lambda i: i.restarts >= 2, timeout=20)
        outside = info.last_exit
    assert own is not None and outside is not None
    described = own.describe()
    assert own.signal_name == "SIGABRT", described
    assert own.self_abort is not None, described
    assert own.self_abort.endswith(
        "native.c:42: check_descriptors: Assertion `descriptors_intact' failed."
    ), own.self_abort
    assert f', raised by the runner itself, as its stderr says: "{own.self_abort}"' in described
    assert outside.signal_name == "SIGABRT" and outside.self_abort is None, outside.describe()
    assert ", not sent by the host (sender unknown)" in outside.describe(), outside.describe()


def restarted(info: PluginInfo) -> bool:
    return info.state is PluginState.READY and info.restarts >= 1


def assert_ended_by_its_own_doing(account: ExitAccount, loop: str) -> None:
    """Exit code 6 with the runner's words; on uvloop, where the loop may poll before any
    look (a worker thread closing them as the loop's thread is about to poll; a method on
    the loop's thread), the abort of libuv's assertion, told as the runner's own."""
    described = account.describe()
    if loop == "asyncio" or account.exit_code == EXIT_DESCRIPTORS_CLOSED:
        assert account.exit_code == EXIT_DESCRIPTORS_CLOSED, described
        assert_says_which(described, all_closed=False)
        return
    assert account.signal_name == "SIGABRT", described
    assert "sender unknown" not in described, described
    assert account.self_abort is not None and "uv__io_poll: Assertion" in account.self_abort
    assert ', raised by the runner itself, as its stderr says: "' in described, described
    assert "uvloop's event loop found a descriptor of its own closed" in described, described


def assert_stopped_cleanly(account: ExitAccount | None) -> None:
    assert account is not None
    assert account.clean and account.reason == "stopped on request", account.describe()


def assert_says_which(described: str, *, all_closed: bool = True) -> None:
    """The runner's words name what it found closed: both kinds, or (``all_closed`` False:
    found by its health thread while the plugin's thread was still closing them, lowest
    first) at least one."""
    assert CLOSED in described, described
    kinds = ("its control connection to the host: ", "its event loop's: ")
    named = [what for what in kinds if what in described]
    assert (named == list(kinds)) if all_closed else named, described
    assert f"it cannot go on, and exits with code {EXIT_DESCRIPTORS_CLOSED}" in described
