"""Setups of a plugin's own that a runner used to undo or double: ``basicConfig()`` without
``force=True``, a root ``QueueHandler`` + ``QueueListener``, loguru sent to a file alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.plugins_fixtures import running
from tests.test_runner_logging_config import CTX, LIBRARY, _assert_everything_once, _only

RUNNER = f"{CTX}.isoplug.runner"


async def test_basic_config_to_a_file_works_as_in_a_program_of_its_own(tmp_path: Path) -> None:
    """basicConfig(filename=..., level=WARNING), no force: the file is made and gets the
    plugin's records, its level applies (its INFO is filtered, not sent), isoplug's handler
    stays beside it so the host gets them too; a second basicConfig() does nothing."""
    log_file = tmp_path / "unforced.log"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        handlers = await host.call("reconfigurer", "basic_config_unforced", "file", str(log_file))
        # Records of one runner arrive in order: the INFO logged before it would be here.
        await waiter.wait_for(LIBRARY, "unforced-file: failed")
        contents = await host.call("reconfigurer", "file_contents", str(log_file))
    assert handlers == ["ForwardingHandler", "FileHandler"]
    assert "FILE unforced-file: failed" in contents
    assert "info of a library" not in contents
    assert not waiter.matching(LIBRARY, "unforced-file: info of a library")
    assert _only(waiter, "unforced-file: failed").levelno == logging.ERROR
    assert _only(waiter, "unforced-file: printed").name == f"{CTX}.stdout"


@pytest.mark.parametrize("how", ["stderr", "stdout"])
async def test_basic_config_to_a_console_adds_it_and_sends_each_record_once(
    tmp_path: Path, how: str
) -> None:
    """basicConfig() to stderr (no arguments but a format) or sys.stdout, no force: the
    plugin's console handler is there, as in a program of its own, and each record arrives
    once, as itself, never also as the console's text."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        handlers = await host.call("reconfigurer", "basic_config_unforced", how)
        await waiter.wait_for(LIBRARY, f"unforced-{how}: failed")
    assert handlers == ["ForwardingHandler", "StreamHandler"]
    _assert_everything_once(waiter, f"unforced-{how}")
    assert not [m for m in waiter.messages() if m.startswith("CONSOLE")]


async def test_a_queue_listener_on_the_root_sends_each_output_once(tmp_path: Path) -> None:
    """The root's handlers replaced by a QueueHandler (a QueueListener feeding a console):
    before isoplug puts its handler back, prints, stderr writes, warnings and logging calls
    arrive once each, though the listener's thread renders a copy of each."""
    tag = "queued"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "queued_root", tag)
        await waiter.wait_for(RUNNER, "took isoplug's log handler off")
        await host.call("reconfigurer", "log_everything", f"{tag}-marker")
        await waiter.wait_for(LIBRARY, f"{tag}-marker: failed")
    assert _only(waiter, f"{tag}: printed").name == f"{CTX}.stdout"
    assert _only(waiter, f"{tag}: written to stderr").name == f"{CTX}.stderr"
    assert _only(waiter, f"{tag}: a warning").name == f"{CTX}.py.warnings"
    assert _only(waiter, f"{tag}: logged").name == LIBRARY
    _assert_everything_once(waiter, f"{tag}-marker")
    assert not [m for m in waiter.messages() if m.startswith("QL ")]


async def test_loguru_sent_to_a_file_alone_still_reaches_the_host(tmp_path: Path) -> None:
    """logger.remove(); logger.add("file.log"): isoplug adds its loguru sink back, says so
    once with what went only to the file meanwhile, and from then on loguru's messages go to
    the file and to the host."""
    log_file = tmp_path / "loguru.log"
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "loguru_to_file", str(log_file), "lgf")
        said = await waiter.wait_for(RUNNER, "isoplug's loguru sink")
        await host.call("reconfigurer", "loguru_error", "lgf-after")
        after = await waiter.wait_for(f"{CTX}.reconfigurer_plugin", "lgf-after: logged")
        contents = await host.call("reconfigurer", "file_contents", str(log_file))
    assert said.levelno == logging.WARNING
    assert "1 loguru message(s) went only to the plugin's sinks" in said.getMessage()
    assert len(waiter.matching(RUNNER, "isoplug's loguru sink")) == 1
    assert after.levelno == logging.ERROR
    assert "ERROR lgf: while isoplug's sink was gone" in contents
    assert "ERROR lgf-after: logged with loguru" in contents
    assert not waiter.matching(f"{CTX}.reconfigurer_plugin", "lgf: while")


async def test_loguru_left_with_no_sink_says_its_lost_messages(tmp_path: Path) -> None:
    """logger.remove() alone: isoplug adds its loguru sink back and says that the two messages
    logged meanwhile reached no sink at all, not that none was lost, and not that the plugin's
    own sinks write elsewhere (it has none); the messages after it arrive from the plugin's
    module."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "loguru_to_nowhere", "lgn")
        said = await waiter.wait_for(RUNNER, "isoplug's loguru sink")
        await host.call("reconfigurer", "loguru_error", "lgn-after")
        after = await waiter.wait_for(f"{CTX}.reconfigurer_plugin", "lgn-after: logged")
    message = said.getMessage()
    assert "left no sink of its own" in message
    assert "2 loguru message(s) reached no sink at all and are lost" in message
    assert "no loguru message was lost" not in message
    assert "beside the plugin's sinks" not in message
    assert after.levelno == logging.ERROR
