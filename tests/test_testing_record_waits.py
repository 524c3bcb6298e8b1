"""A harness's records are its own host's runners', and its wait_for_record returns each record
once: a wait after an action is not answered by a record from before it. Real runners under a
real host throughout."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug.testing import BlockingHarness, PluginHarness, Records, attached
from tests.greeter_plugin import write_greeter


def test_each_wait_for_record_needs_a_record_of_its_own(
    tmp_path: Path, isoplug_host: object
) -> None:
    plugin: BlockingHarness = isoplug_host(write_greeter(tmp_path))  # type: ignore[operator]
    plugin.call("greet", name="Ada")
    plugin.call("greet", name="Ada")
    first = plugin.wait_for_record(plugin="greeter", text="greeting Ada")
    second = plugin.wait_for_record(plugin="greeter", text="greeting Ada")
    assert [first.getMessage(), second.getMessage()] == ["greeting Ada #1", "greeting Ada #2"]
    with pytest.raises(TimeoutError, match=r"within 0\.2 s besides the 2 returned by earlier"):
        plugin.wait_for_record(plugin="greeter", text="greeting Ada", timeout=0.2)

    # Every record, returned or not: through the records themselves.
    assert plugin.run(plugin.records.wait_for_record(text="greeting Ada")) is first
    assert len(plugin.records.select(plugin="greeter", text="greeting Ada")) == 2

    plugin.records.clear()
    assert not plugin.records.select(plugin="greeter")
    plugin.call("greet", name="Bo")
    assert plugin.wait_for_record(text="greeting").getMessage() == "greeting Bo #3"


async def test_a_harness_keeps_only_its_own_runners_records(tmp_path: Path) -> None:
    """Two hosts of the same plugin in one process: each harness's records are its own."""
    folder = write_greeter(tmp_path)
    process_wide = Records()
    with attached(process_wide, "plugin"):
        async with PluginHarness(folder) as old, PluginHarness(folder) as new:
            await new.call("greet", name="Ada")
            record = await new.wait_for_record(plugin="greeter", text="greeting Ada")
            runner_pid = record.__dict__["runner_pid"]
            assert runner_pid == new.info().pid
            assert runner_pid in new.host.runner_pids()
            assert runner_pid not in old.host.runner_pids()
            # Handlers run in the order they were attached (logging calls them in turn, in
            # the thread that replays the record): old's before new's, process_wide's first.
            assert process_wide.select(text="greeting Ada") == [record]
            assert not old.records.select(plugin="greeter")
            await old.call("greet", name="Bo")
            mine = await old.wait_for_record(plugin="greeter", text="greeting")
            mine_pid = mine.__dict__["runner_pid"]
            assert (mine.getMessage(), mine_pid) == ("greeting Bo #1", old.info().pid)
