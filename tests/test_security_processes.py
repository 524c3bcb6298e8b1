"""The README's "Security model", the part about processes: who may connect as a runner, what a
plugin process can do anyway, and what the plugins of one group share.

Real hosts and runners of the ``hostile`` fixture, which tries what a plugin could: use a token
taken from another runner (the test hands it over; reading it out of that runner's memory is
not the point, the host's refusal is), lie about its pid, start descendants, reach past its
own plugin context. (:mod:`tests.test_security_model` holds the part about plugin output.)
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import pytest

from isoplug.errors import RemoteError
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter
from tests.test_security_model import FORMATTER


def refusals(waiter: RecordWaiter) -> list[str]:
    """What the host's listeners said about the connections they refused."""
    return [
        r.getMessage()
        for r in list(waiter.records)
        if r.name == "isoplug.rpc" and r.getMessage().startswith("refused a connection")
    ]


async def test_a_log_token_taken_from_another_runner_is_refused(tmp_path: Path) -> None:
    """A plugin holding another runner's log token cannot log as that runner: the kernel says
    the connection is not from that runner's processes, the handshake refuses it, nothing of
    it is logged, and the host's warning names the pid the kernel gave."""
    marker = "stolen-token-record"
    async with running(tmp_path, "hostile", "echo", logger=None) as (host, waiter):
        hostile_pid = await host.call("hostile", "pid")
        echo = host._supervisor("echo")
        token, echo_pid = echo.expected_log_token(), echo.pid
        address = host._log_bridge.address
        failure = await host.call(
            "hostile", "forward_as", address=address, token=token, runner="echo", text=marker
        )
        assert failure is not None and "refused by the listener" in failure
        await waiter.wait_until(lambda: refusals(waiter))
        # The echo runner's own log connection still works.
        await host.call("echo", "say", out=["echo still logs"], err=[])
        await waiter.wait_for("plugin.echo.stdout", "echo still logs")
    assert refusals(waiter) == [
        f"refused a connection from pid {hostile_pid} on {address}: runner echo: pid "
        f"{hostile_pid} is neither the runner (pid {echo_pid}) nor a process it started: it "
        "is in runner hostile's tree (by its parents)"
    ]
    assert not [r for r in waiter.records if marker in FORMATTER.format(r)]


async def test_a_hello_lying_about_its_pid_is_refused_before_any_handler_runs(
    tmp_path: Path,
) -> None:
    """With another runner's tokens and that runner's pid claimed in its hello, a plugin is
    refused on both listeners at the handshake: a capability request right behind the hello
    never runs, and the host's messages give the kernel's pid, not the claimed one."""
    calls: list[str] = []
    async with running(tmp_path, "hostile", "echo", logger=None) as (host, waiter):
        host.register_capability("test.add", lambda: calls.append("add"))
        hostile_pid = await host.call("hostile", "pid")
        echo = host._supervisor("echo")
        echo_pid = echo.pid
        assert host._listener is not None and echo_pid is not None
        for address, token, role in (
            (str(host._listener.address), echo.expected_token(), "control"),
            (host._log_bridge.address, echo.expected_log_token(), "logs"),
        ):
            answers = await host.call(
                "hostile",
                "hello_as",
                address=address,
                token=token,
                runner="echo",
                role=role,
                claimed_pid=echo_pid,
                capability="test.add" if role == "control" else None,
            )
            assert answers == ["Reject: refused by the listener"], role
        await waiter.wait_until(lambda: len(refusals(waiter)) == 2 or None)
        assert await host.call("echo", "echo", value="unaffected") == "unaffected"
    assert calls == []
    control, logs = refusals(waiter)
    assert control.endswith(
        f"runner echo: the control connection comes from pid {hostile_pid}, not from the "
        f"runner (pid {echo_pid})"
    )
    for text in (control, logs):
        assert text.startswith(f"refused a connection from pid {hostile_pid} on "), text
        assert len(re.findall(rf"\bpid {echo_pid}\b", text)) == 1, text  # as the runner only


async def test_processes_a_runner_started_forward_their_logs(tmp_path: Path) -> None:
    """A runner's descendants inherit its log handler and token and are accepted: one whose
    parent exited (re-parented away from the runner) and one that left the runner's session."""
    async with running(tmp_path, "hostile", logger=None) as (host, waiter):
        runner_pid = await host.call("hostile", "pid")
        pids = await host.call("hostile", "descendants_log", text="descendant-record")
        orphan = await waiter.wait_for("plugin.hostile.hostile", "from an orphan")
        leaver = await waiter.wait_for("plugin.hostile.hostile", "from a new session")
        # The host says whose connections they are: the first at once, later ones summed up
        # once per report interval (a plugin forking a pool is not one line per child).
        summary = await waiter.wait_for("isoplug.host", "more log connection(s) from its")
    assert orphan.process == pids["orphan"] and leaver.process == pids["setsid"]
    assert orphan.runner_pid == leaver.runner_pid == runner_pid  # type: ignore[attr-defined]
    assert orphan.plugin_id == leaver.plugin_id == "hostile"  # type: ignore[attr-defined]
    first = [
        pid
        for pid in pids.values()
        if waiter.matching(
            "isoplug.host",
            f"log connection from pid {pid}, a descendant of runner pid {runner_pid}",
        )
    ]
    (latest,) = set(pids.values()) - set(first)
    assert re.fullmatch(
        r"runner hostile: 1 more log connection\(s\) from its descendants in the last \d+ s "
        rf"\(the latest: pid {latest}\)",
        summary.getMessage(),
    )
    assert not refusals(waiter)


async def test_each_runner_process_has_tokens_of_its_own_and_forgets_the_control_one(
    tmp_path: Path,
) -> None:
    """Two tokens per runner process, none shared with another runner or an earlier process;
    no object in a serving runner refers to its control token; the log token is kept (its
    handler reconnects and forks with it), which is why the log listener checks pids."""
    async with running(tmp_path, "hostile", "echo") as (host, _):
        supervisor = host._supervisor("hostile")
        control, logs = supervisor.expected_token(), supervisor.expected_log_token()
        assert control and logs
        tokens: set[str | None] = {control, logs}
        assert await host.call("hostile", "holders_of", text=control) == []
        assert await host.call("hostile", "holders_of", text=logs)  # the search finds it
        echo = host._supervisor("echo")
        tokens |= {echo.expected_token(), echo.expected_log_token()}
        await host.restart("hostile")
        tokens |= {supervisor.expected_token(), supervisor.expected_log_token()}
    assert len(tokens) == 6 and None not in tokens


async def test_a_plugin_process_can_do_what_the_hosts_user_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plugins are processes, not sandboxes: a plugin runs as the host's user and may read its
    files, open network connections and signal the host. Of the host's environment it gets
    the basics, not the host's other variables (its secrets)."""
    monkeypatch.setenv("ISOPLUG_TEST_HOST_SECRET", "inherited")
    secret = tmp_path / "host-file"
    secret.write_text("the host's file")
    with socket.create_server(("127.0.0.1", 0)) as server:
        async with running(tmp_path, "hostile") as (host, _):
            reached = await host.call(
                "hostile",
                "reach",
                path=str(secret),
                port=server.getsockname()[1],
                host_pid=os.getpid(),
                variable="ISOPLUG_TEST_HOST_SECRET",
            )
    assert reached == {
        "uid": os.getuid(),
        "file": "the host's file",
        "connected": True,
        "signalled": True,
        "environment": None,
    }


async def test_plugins_of_a_group_share_grants_and_logger_names_and_nothing_more(
    tmp_path: Path,
) -> None:
    """In one group runner a plugin can use another member's capability grant and log as it
    (the host sees only the runner); it cannot use or speak for a plugin of another runner."""
    async with running(tmp_path, "pair_a", "pair_b", "hostile", logger=None) as (host, waiter):
        host.register_capability("test.pair_b_only", lambda: "pair_b's")
        host.register_capability("test.granted", lambda: "hostile's")
        # Its own context holds pair_a to its own grants; past it, pair_b's grant is open.
        with pytest.raises(RemoteError, match="may not call host capability"):
            await host.call("pair_a", "call_host", capability="test.pair_b_only")
        taken = await host.call(
            "pair_a", "call_host_as", plugin="pair_b", capability="test.pair_b_only"
        )
        assert taken == "pair_b's"
        with pytest.raises(RemoteError, match="runner 'pair' has no plugin 'hostile'"):
            await host.call("pair_a", "call_host_as", plugin="hostile", capability="test.granted")
        await host.call("pair_a", "log_as", logger="plugin.pair_b", text="said-as-pair_b")
        await host.call("pair_a", "log_as", logger="plugin.hostile", text="said-as-hostile")
        as_member = await waiter.wait_until(
            lambda: next((r for r in waiter.records if "said-as-pair_b" in r.getMessage()), None)
        )
        as_outsider = await waiter.wait_until(
            lambda: next((r for r in waiter.records if "said-as-hostile" in r.getMessage()), None)
        )
    assert as_member.name == "plugin.pair_b"
    assert as_member.plugin_id == "pair_b"  # type: ignore[attr-defined]
    # Logged in pair_a's call: pair_a's, as if it ran alone (tests/test_group_logging.py).
    assert as_outsider.name == "plugin.pair_a.plugin.hostile"
    assert as_outsider.plugin_id == "pair_a"  # type: ignore[attr-defined]
    assert as_outsider.levelno == logging.WARNING
