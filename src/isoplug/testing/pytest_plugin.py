"""The pytest plugin of isoplug (registered through the ``pytest11`` entry point): the fixture
``isoplug_host`` (of type :class:`IsoplugHost`), which runs plugins for a test and stops them
after it; and, for the whole session, hosts that share their zygote
(:func:`isoplug.testing.share_zygotes`): a test's host then starts its first runner in tens of
milliseconds, not hundreds.

pytest imports this module in every session of an environment where isoplug is installed,
and rewrites the asserts of every isoplug module imported there: so it imports only the
zygote switch at the start, and the harness (with the host) once a test asks for a fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from isoplug.zygote_sharing import share_zygotes

if TYPE_CHECKING:
    from isoplug import SupervisorConfig
    from isoplug.testing.blocking_harness import BlockingHarness

__all__ = ["IsoplugHost", "isoplug_host", "isoplug_own_zygotes", "pytest_configure"]


class IsoplugHost(Protocol):
    """The type of the ``isoplug_host`` fixture, to annotate a test's parameter with:
    ``def test_greets(isoplug_host: IsoplugHost) -> None``."""

    def __call__(
        self,
        path: str | os.PathLike[str],
        *,
        capabilities: Mapping[str, Callable[..., Any]] | None = None,
        deny: Iterable[str] = (),
        config: SupervisorConfig | Mapping[str, Mapping[str, Any]] = ...,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
        ready_timeout: float = 30.0,
        retry_start: bool = False,
    ) -> BlockingHarness:
        """Start a host over ``path``, a plugin's folder or a folder of plugins, with the
        options of :class:`~isoplug.testing.PluginHarness` (``config`` defaults to
        :data:`~isoplug.testing.FAST`); return its started
        :class:`~isoplug.testing.BlockingHarness`, stopped when the test ends."""
        ...


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
def isoplug_host() -> Iterator[IsoplugHost]:
    """Start a host over a plugin's folder (or a folder of plugins): call it with the path and
    any :class:`~isoplug.testing.PluginHarness` option; it returns a started
    :class:`~isoplug.testing.BlockingHarness`, stopped when the test ends."""
    from isoplug.testing.blocking_harness import BlockingHarness

    started: list[BlockingHarness] = []

    def start(path: str | os.PathLike[str], **options: Any) -> BlockingHarness:
        __tracebackhide__ = True  # a plugin that cannot start: the test's line and why
        # Typed where a test sees it (IsoplugHost); BlockingHarness checks each option.
        harness = BlockingHarness(path, **options).__enter__()
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        harness.__exit__(None, None, None)
