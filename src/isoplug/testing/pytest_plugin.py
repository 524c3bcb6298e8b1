"""The pytest plugin of isoplug (registered through the ``pytest11`` entry point): the fixture
``isoplug_host``, which runs plugins for a test and stops them after it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from isoplug.testing.harness import BlockingHarness

__all__ = ["isoplug_host"]


@pytest.fixture
def isoplug_host() -> Iterator[Callable[..., BlockingHarness]]:
    """Start a host over a plugin's folder (or a folder of plugins): call it with the path and
    any :class:`~isoplug.testing.PluginHarness` option; it returns a started
    :class:`~isoplug.testing.BlockingHarness`, stopped when the test ends."""
    started: list[BlockingHarness] = []

    def start(path: str | os.PathLike[str], **options: Any) -> BlockingHarness:
        harness = BlockingHarness(path, **options).__enter__()
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        harness.__exit__(None, None, None)
