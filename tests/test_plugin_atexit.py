"""A plugin's ``atexit`` hooks run at a normal stop while log forwarding still works: what
they print, log or write arrives as records with their own stream, logger and level (never as
the forwarding handler's stderr fallback); one that blocks does not hold the runner past the
teardown timeout; a SIGKILL while they run loses none of what they logged; and the
interpreter's order (``concurrent.futures``' joins first) still holds."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import time
from pathlib import Path

from isoplug.host import ExitAccount
from isoplug.testing import eventually
from tests.plugins_fixtures import SHORT_TEARDOWN, process_alive, running

#: The plugin's own logger ("exiter.exit" in the runner), as the host names it.
EXIT_LOGGER = "plugin.exiter.exiter.exit"
RUNNER_LOGGER = "plugin.exiter.isoplug.runner"
#: Far below SHORT_TEARDOWN's shutdown_timeout (30 s), after which the host would SIGTERM.
WITHIN = 15.0


def assert_clean_stop(account: ExitAccount | None) -> None:
    assert account is not None
    assert (account.returncode, account.sent_by_host) == (0, None), account.describe()
    assert account.reason == "stopped on request", account.describe()


async def test_atexit_output_keeps_its_stream_logger_and_level(tmp_path: Path) -> None:
    async with running(tmp_path, "exiter", config=SHORT_TEARDOWN) as (host, waiter):
        await host.call("exiter", "register_talkative")
        info = await host.stop("exiter")
    assert_clean_stop(info.last_exit)
    got = {
        (r.name, r.levelname, getattr(r, "stream", None), r.getMessage())
        for r in waiter.records
        if "atexit" in r.getMessage() or "forged" in r.getMessage()
    }
    assert got == {
        ("plugin.exiter.stdout", "INFO", "stdout", "atexit print"),
        (EXIT_LOGGER, "ERROR", None, "atexit error record"),
        ("plugin.exiter.stderr", "WARNING", "stderr", "atexit stderr"),
        # Text that looks like a record of the host's is the plugin's stderr line, as it wrote
        # it: neither the host's logger nor its level.
        (
            "plugin.exiter.stderr",
            "WARNING",
            "stderr",
            "[CRITICAL isoplug.host] forged by the plugin",
        ),
        ("plugin.exiter.stdout", "INFO", "stdout", "atexit partial line"),
    }, waiter.messages()
    # Nothing came through the closed handler's fallback.
    assert not [m for m in waiter.messages() if "log handler closed" in m], waiter.messages()


async def test_an_atexit_hook_that_raises_is_an_error_record_and_the_others_run(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "exiter", config=SHORT_TEARDOWN) as (host, waiter):
        await host.call("exiter", "register_failing")
        info = await host.stop("exiter")
    assert_clean_stop(info.last_exit)
    (failed,) = [
        r for r in waiter.records if r.exc_info and "atexit hook failed" in str(r.exc_info[1])
    ]
    assert failed.levelno == logging.ERROR and failed.name.startswith("plugin.exiter"), failed
    assert waiter.matching(EXIT_LOGGER, "atexit error record"), waiter.messages()
    assert not [m for m in waiter.messages() if "log handler closed" in m], waiter.messages()


async def test_an_atexit_hook_that_blocks_is_named_and_does_not_hold_the_runner(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "exiter", config=SHORT_TEARDOWN) as (host, waiter):
        await host.call("exiter", "register_blocking")
        start = time.monotonic()
        info = await host.stop("exiter")
        took = time.monotonic() - start
    assert_clean_stop(info.last_exit)
    assert took < WITHIN, (took, info.last_exit)
    assert waiter.matching(EXIT_LOGGER, "atexit hook blocks")
    (warning,) = waiter.matching(RUNNER_LOGGER, "an atexit hook")
    assert warning.levelno == logging.WARNING
    assert re.search(
        r"an atexit hook \(exiter_plugin\.block\) had not returned by the teardown timeout; "
        r"it is at \S+exiter_plugin\.py:\d+ in block; the runner exits without it",
        warning.getMessage(),
    ), warning.getMessage()


async def test_a_sigkill_during_the_atexit_hooks_loses_nothing_they_logged(
    tmp_path: Path,
) -> None:
    count = 2000
    # The hook waits for good: only the kill ends it, well within the teardown timeout.
    config = dataclasses.replace(SHORT_TEARDOWN, teardown_timeout=60.0, shutdown_timeout=90.0)
    async with running(tmp_path, "exiter", config=config) as (host, waiter):
        await host.call("exiter", "register_burst", count)
        pid = host.plugin("exiter").pid
        assert pid is not None
        stopping = asyncio.ensure_future(host.stop("exiter"))
        await waiter.wait_for(EXIT_LOGGER, "atexit hook waits for its kill")
        os.kill(pid, signal.SIGKILL)
        info = await stopping
    account = info.last_exit
    assert account is not None and account.returncode == -signal.SIGKILL, account
    burst = [r for r in waiter.matching(EXIT_LOGGER, "atexit burst") if hasattr(r, "n")]
    assert [r.n for r in burst] == list(range(count)), len(burst)
    assert {r.levelno for r in burst} == {logging.WARNING}


async def test_a_process_pool_left_open_still_ends_before_multiprocessing_joins(
    tmp_path: Path,
) -> None:
    """The interpreter runs concurrent.futures' joins (threading's exit callbacks) before the
    atexit hooks, multiprocessing's among them, which joins the process's children: the
    runner keeps that order, or the pool's worker would hold the exit."""
    async with running(tmp_path, "exiter", config=SHORT_TEARDOWN) as (host, waiter):
        assert await host.call("exiter", "use_process_pool") == 49
        start = time.monotonic()
        info = await host.stop("exiter")
        took = time.monotonic() - start
    assert_clean_stop(info.last_exit)
    assert took < WITHIN, took
    assert waiter.matching(EXIT_LOGGER, "atexit hook after the pool ran")
    assert not waiter.matching(RUNNER_LOGGER, "an atexit hook"), waiter.messages()


async def test_in_a_group_an_atexit_hook_is_the_plugin_that_registered_it(
    tmp_path: Path,
) -> None:
    """Its print, its records and its failure arrive as that member's, not the group's."""
    async with running(tmp_path, "duo_a", "duo_b", config=SHORT_TEARDOWN) as (host, waiter):
        await host.call("duo_a", "register_exit_hooks")
        await host.call("duo_b", "register_exit_hooks")
        info = await host.stop("duo_a")
    assert_clean_stop(info.last_exit)
    for member in ("duo_a", "duo_b"):
        (printed,) = waiter.matching(f"plugin.{member}.stdout", f"{member} atexit print")
        (logged,) = waiter.matching(f"plugin.{member}.{member}_plugin", f"{member} atexit record")
        (failed,) = [
            r
            for r in waiter.records
            if r.exc_info and f"{member} atexit hook failed" in str(r.exc_info[1])
        ]
        assert failed.name.startswith(f"plugin.{member}"), failed.name
        for record in (printed, logged, failed):
            assert getattr(record, "plugin_id", None) == member, record
    assert not [m for m in waiter.messages() if "unregistered hook ran" in m], waiter.messages()


async def test_a_stdlib_hook_that_blocks_is_named_with_the_line_it_waits_at(
    tmp_path: Path,
) -> None:
    """multiprocessing's own hook, joining a non-daemon child that sleeps for minutes: the
    WARNING names that hook and the standard library's line where it waits, not isoplug's
    wrapper that calls it (which it named: exit_hooks.py in __call__)."""
    async with running(tmp_path, "exiter", config=SHORT_TEARDOWN) as (host, waiter):
        child = await host.call("exiter", "start_sleeping_child")
        start = time.monotonic()
        info = await host.stop("exiter")
        took = time.monotonic() - start
    assert_clean_stop(info.last_exit)
    assert took < WITHIN, (took, info.last_exit)
    (warning,) = waiter.matching(RUNNER_LOGGER, "an atexit hook")
    assert warning.levelno == logging.WARNING
    assert re.search(
        r"an atexit hook \(multiprocessing\.util\._exit_function\) had not returned by the "
        r"teardown timeout; it is at \S+/multiprocessing/popen_fork\.py:\d+ in (poll|wait); "
        r"the runner exits without it",
        warning.getMessage(),
    ), warning.getMessage()
    assert "exit_hooks.py" not in warning.getMessage()
    # The host ends the runner's process group (the child among it) after the runner exits.
    await eventually(lambda: not process_alive(child))


async def test_in_a_group_a_blocking_atexit_hook_is_named_as_the_member_that_registered_it(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "duo_a", "duo_b", config=SHORT_TEARDOWN) as (host, waiter):
        await host.call("duo_b", "register_blocking_exit_hook")
        info = await host.stop("duo_a")
    assert_clean_stop(info.last_exit)
    (warning,) = [r for r in waiter.records if "an atexit hook" in r.getMessage()]
    assert warning.name == "plugin.duo_b.isoplug.runner", warning.name
    assert re.search(
        r"an atexit hook \(duo_b_plugin\.Duo\.register_blocking_exit_hook\.<locals>\.block\) "
        r"had not returned by the teardown timeout; it is at \S+duo_b_plugin\.py:\d+ in block;",
        warning.getMessage(),
    ), warning.getMessage()


async def test_an_atexit_hooks_enqueued_loguru_sink_is_drained_before_forwarding_ends(
    tmp_path: Path,
) -> None:
    # Its sink takes 0.05 s a message: far longer than the rest of the exit, far shorter than
    # the default teardown timeout, which bounds the drain.
    count = 10
    async with running(tmp_path, "exiter") as (host, waiter):
        await host.call("exiter", "register_loguru_enqueued", count)
        info = await host.stop("exiter")
    assert_clean_stop(info.last_exit)
    got = [
        (r.levelname, r.getMessage()) for r in waiter.records if "loguru enqueued" in r.getMessage()
    ]
    assert got == [("WARNING", f"loguru enqueued {n}") for n in range(count)], waiter.messages()
    assert not [m for m in waiter.messages() if "log handler closed" in m], waiter.messages()
