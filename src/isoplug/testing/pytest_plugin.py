"""The pytest plugin of isoplug (registered through the ``pytest11`` entry point): the fixture
``isoplug_host``, which runs plugins for a test and stops them after it; and, for the whole
session, hosts that share their zygote (:func:`isoplug.testing.share_zygotes`): a test's
host then starts its first runner in tens of milliseconds, not hundreds."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from isoplug.host.zygote_pool import share_zygotes
from isoplug.testing.blocking_harness import BlockingHarness

__all__ = ["isoplug_host", "isoplug_own_zygotes", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Hosts of the session share their zygote; a ``conftest.py`` that wants each host's own
    calls ``isoplug.testing.share_zygotes(False)``, a test the fixture ``isoplug_own_zygotes``."""
    share_zygotes()


@pytest.fixture
def isoplug_own_zygotes() -> Iterator[None]:
    """Each host the test starts has a zygote of its own, as outside a test session: for a
    test that checks what a host leaves behind (a shared zygote, and its thread, live on)."""
    was = share_zygotes(False)
    yield
    share_zygotes(False)  # ends the zygotes the test shared, if it turned sharing on
    share_zygotes(was)


@pytest.fixture
def isoplug_host() -> Iterator[Callable[..., BlockingHarness]]:
    """Start a host over a plugin's folder (or a folder of plugins): call it with the path and
    any :class:`~isoplug.testing.PluginHarness` option; it returns a started
    :class:`~isoplug.testing.BlockingHarness`, stopped when the test ends."""
    started: list[BlockingHarness] = []

    def start(path: str | os.PathLike[str], **options: Any) -> BlockingHarness:
        __tracebackhide__ = True  # a plugin that cannot start: the test's line and why
        harness = BlockingHarness(path, **options).__enter__()
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        harness.__exit__(None, None, None)
