"""docs/reference/errors.md: what isoplug raises derives from ``IsoplugError`` (but a wrong
argument's ``TypeError`` / ``ValueError``, and what the caller's own code raises). Each case
here escaped ``except IsoplugError`` as a plain builtin; now it is caught by that and still by
the builtin it was, so ``except TimeoutError`` / ``except RuntimeError`` code keeps working."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from isoplug import Host, IsoplugError
from isoplug.errors import FolderMissing, NotAFolder, UsageError, WaitTimeout
from isoplug.testing import BlockingHarness
from tests.plugins_fixtures import FAST, plugins_dir


async def test_start_on_a_missing_plugins_folder(tmp_path: Path) -> None:
    with pytest.raises(FolderMissing, match="does not exist") as caught:
        await Host(tmp_path / "missing").start()
    assert isinstance(caught.value, IsoplugError)
    assert isinstance(caught.value, FileNotFoundError)


async def test_start_on_a_file_as_plugins_folder(tmp_path: Path) -> None:
    (tmp_path / "plugins").write_text("")
    with pytest.raises(NotAFolder, match="is not a directory") as caught:
        await Host(tmp_path / "plugins").start()
    assert isinstance(caught.value, IsoplugError)
    assert isinstance(caught.value, NotADirectoryError)


async def test_waits_that_time_out_and_a_second_start(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    async with Host(plugins_dir(tmp_path, "gated"), config=FAST) as host:
        host.register_capability("gate.wait", wait)
        # Its setup waits on the gate, held closed: neither wait can end but by its timeout.
        with pytest.raises(IsoplugError, match="plugins not ready within") as ready:
            await host.wait_ready(timeout=0.2)
        with pytest.raises(IsoplugError, match="did not reach the state") as reached:
            await host.wait_for("gated", lambda info: info.restarts == 5, timeout=0.2)
        with pytest.raises(IsoplugError, match="the host is running") as again:
            await host.__aenter__()
        gate.set()
    for timed_out in (ready.value, reached.value):
        assert isinstance(timed_out, WaitTimeout)
        assert isinstance(timed_out, TimeoutError)
    assert isinstance(again.value, UsageError)
    assert isinstance(again.value, RuntimeError)


def test_a_harness_record_wait_that_times_out(tmp_path: Path) -> None:
    with (
        BlockingHarness(plugins_dir(tmp_path, "echo")) as harness,
        pytest.raises(IsoplugError, match="never logged") as caught,
    ):
        harness.wait_for_record(text="never logged", timeout=0.2)
    assert isinstance(caught.value, WaitTimeout)
    assert isinstance(caught.value, TimeoutError)


def test_a_harness_over_a_folder_without_plugins(tmp_path: Path) -> None:
    with pytest.raises(IsoplugError) as caught, BlockingHarness(tmp_path):
        pass
    assert isinstance(caught.value, FolderMissing)
    assert isinstance(caught.value, FileNotFoundError)
