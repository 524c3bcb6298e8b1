"""A plugin that configures logging for itself (basicConfig, dictConfig, a console handler of
its own) still has every record, print and traceback arrive at the host, as itself, once."""

from __future__ import annotations

import logging
from pathlib import Path

from isoplug.testing.records import Records
from tests.plugins_fixtures import running

LIBRARY = "plugin.reconfigurer.thirdparty.lib"
CTX = "plugin.reconfigurer"


async def _marker(host: object, waiter: Records, tag: str) -> None:
    """Records of one runner arrive in order: once a later one is here, all before it are."""
    await host.call("reconfigurer", "log_everything", f"{tag}-marker")  # type: ignore[attr-defined]
    await waiter.wait_for(LIBRARY, f"{tag}-marker: failed")


def _assert_everything_once(waiter: Records, tag: str) -> None:
    """What _log_everything(tag) logs arrived once each, as records of their own level and
    logger, and no handler's formatting of them arrived as text."""
    library = waiter.matching(LIBRARY, f"{tag}: info of a library")
    assert [r.levelno for r in library] == [logging.INFO]
    assert library[0].funcName == "_log_everything"
    failed = waiter.matching(LIBRARY, f"{tag}: failed")
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert failed[0].exc_info is not None and str(failed[0].exc_info[1]) == f"{tag}: boom"
    assert [r.levelno for r in waiter.matching(CTX, f"{tag}: through ctx.logger")] == [
        logging.WARNING
    ]
    assert len(waiter.matching(f"{CTX}.stdout", f"{tag}: printed")) == 1
    assert len(waiter.matching(f"{CTX}.stderr", f"{tag}: written to stderr")) == 1
    # The plugin's formats put the logger's name into the text: no record carries one.
    formatted = [m for m in waiter.messages() if tag in m and "thirdparty.lib" in m]
    assert formatted == []


async def test_basic_config_forced_keeps_every_record_arriving_as_itself(tmp_path: Path) -> None:
    """basicConfig(force=True) in a worker thread closes every root handler, isoplug's
    included: records logged right after it still arrive, with their levels and exception,
    and the plugin's console format never reaches the host as text."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "basic_config_forced")
        await waiter.wait_for("plugin.reconfigurer.isoplug.runner", "isoplug kept it")
        await _marker(host, waiter, "forced")
        _assert_everything_once(waiter, "forced")
        _assert_everything_once(waiter, "forced-marker")


async def test_dict_config_keeps_isoplugs_loggers_and_names_the_plugins_it_disabled(
    tmp_path: Path,
) -> None:
    """dictConfig() on the event loop, with a console handler and the default
    disable_existing_loggers: ctx.logger, the print streams and the log handler are isoplug's
    and keep working from the plugin's next line on; the plugin's own module logger, which
    the configuration disabled, is named in a WARNING with the fix."""
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "dict_config")
        warning = await waiter.wait_for(
            "plugin.reconfigurer.isoplug.runner", "disabled the logger(s)"
        )
        await _marker(host, waiter, "dict")
        _assert_everything_once(waiter, "dict")
    assert warning.levelno == logging.WARNING
    assert "reconfigurer_plugin" in warning.getMessage()
    assert "disable_existing_loggers=False" in warning.getMessage()
    assert not waiter.matching("plugin.reconfigurer.reconfigurer_plugin")
    # The runner ended as usual: its log connection said goodbye, nothing was lost.
    assert not [m for m in waiter.messages() if "without a goodbye" in m or "lost" in m]


async def test_a_console_handler_added_beside_isoplugs_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    """A StreamHandler the plugin adds to the root logger writes each record to stderr; the
    record itself arrives once, not also as a stderr line."""
    async with running(tmp_path, "reconfigurer") as (host, waiter):
        await host.call("reconfigurer", "console_added")
        await _marker(host, waiter, "added")
        _assert_everything_once(waiter, "added")


async def test_a_file_only_configuration_writes_its_file_and_the_host_still_gets_records(
    tmp_path: Path,
) -> None:
    """basicConfig(filename=..., force=True): the plugin's file gets its records, and once
    isoplug has put its handler back (it says so), so does the host."""
    log_file = tmp_path / "plugin.log"
    async with running(tmp_path, "reconfigurer", logger=None) as (host, waiter):
        await host.call("reconfigurer", "file_only", str(log_file))
        await waiter.wait_for("plugin.reconfigurer.isoplug.runner", "isoplug kept it")
        await _marker(host, waiter, "file")
        _assert_everything_once(waiter, "file-marker")
        contents = await host.call("reconfigurer", "file_contents", str(log_file))
    assert "INFO:thirdparty.lib:file-marker: info of a library" in contents
    assert "ERROR:thirdparty.lib:file-marker: failed" in contents
