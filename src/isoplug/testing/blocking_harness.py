"""Run plugins for a synchronous test (a plain pytest test, the ``isoplug_host`` fixture):
:class:`BlockingHarness` runs a :class:`~isoplug.testing.PluginHarness` on an event loop of its
own, in a thread, and blocks on each of its methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from isoplug import Host, PluginInfo, SupervisorConfig
from isoplug.errors import WaitTimeout
from isoplug.testing.harness import FAST, CapabilityCall, PluginHarness, host_configs
from isoplug.testing.harness_operations import BlockingOperations
from isoplug.testing.records import Records

__all__ = ["BlockingHarness"]

#: A failing test's report shows the test's line and the error, not the harness's source.
__tracebackhide__ = True

T = TypeVar("T")

_BLOCKING_ADVICE = (
    "This Host runs on the event loop of an isoplug.testing.BlockingHarness, in a thread of "
    "its own: use the harness's blocking methods instead (harness.stop(), harness.restart(), "
    "harness.set_config(...), harness.set_log_level(...), harness.call_with(...), "
    "harness.publish(...), harness.wait_for(...)), or harness.run(harness.host.<method>(...)) "
    "for the host's other coroutines"
)


class BlockingHarness(BlockingOperations):
    """:class:`PluginHarness` for synchronous code (a plain pytest test): the host runs on an
    event loop in a thread of its own; every method blocks until done. It takes the same
    options, and has the same methods, with the same signatures.

    Use ``with BlockingHarness(path) as plugin:``, or the pytest fixture ``isoplug_host``.
    The host's own coroutines (``plugin.host.stop(...)``) belong to the harness's loop: use
    the harness's methods of the same names, or :meth:`run` for the others.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        capabilities: Mapping[str, Callable[..., Any]] | None = None,
        deny: Iterable[str] = (),
        config: SupervisorConfig | Mapping[str, Mapping[str, Any]] = FAST,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
        ready_timeout: float = 30.0,
        retry_start: bool = False,
    ) -> None:
        """See :class:`PluginHarness`: the same options, in the same words."""
        # Checked here first: a mistake is named as the test wrote it.
        host_configs(config, plugin_config, "BlockingHarness")
        self._harness = PluginHarness(
            path,
            capabilities=capabilities,
            deny=deny,
            config=config,
            plugin_config=plugin_config,
            ready_timeout=ready_timeout,
            retry_start=retry_start,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="isoplug-test-host", daemon=True
        )

    @property
    def records(self) -> Records:
        """Every record of ``plugin.*`` and ``isoplug.*`` so far (``.select(...)`` picks)."""
        return self._harness.records

    @property
    def capability_calls(self) -> list[CapabilityCall]:
        """Every call of a capability the test offered."""
        return self._harness.capability_calls

    @property
    def host(self) -> Host:
        """The running host. Its plain methods (``plugin(id)``, ``log_metrics(id)``) work
        from the test; its coroutines belong to :attr:`loop`: use the harness's method of the
        same name, or :meth:`run` (``plugin.run(plugin.host.wait_ready())``)."""
        return self._harness.host

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the host runs on, in the harness's thread."""
        return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` (one of :attr:`host`'s, say) on the host's loop; its result, or
        what it raised. Past ``timeout`` seconds (None: no limit) it is cancelled, and
        ``WaitTimeout`` raised."""
        return self._run(asyncio.wait_for(coroutine, timeout))

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        # Its error raised here, not by future.result(), whose two frames of concurrent.futures
        # (standard library: never hidden) would stand in every failing test's report.
        if not concurrent.futures.wait((future,), timeout).done:
            raise WaitTimeout(f"the harness's call did not end within {timeout:g} s")
        error = future.exception()
        if error is None:
            return future.result()
        try:
            raise error
        finally:
            del error  # the raised error's traceback holds this frame: no cycle through it

    def __enter__(self) -> BlockingHarness:
        self._thread.start()
        try:
            self._run(self._harness.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        self.host.other_loop_advice = _BLOCKING_ADVICE
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._run(self._harness.__aexit__(None, None, None))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def plugin_ids(self) -> list[str]:
        return self._harness.plugin_ids()

    def info(self, plugin_id: str | None = None) -> PluginInfo:
        return self._harness.info(plugin_id)

    def call(self, method: str, /, *args: Any, plugin: str | None = None, **kwargs: Any) -> Any:
        """See :meth:`PluginHarness.call` (``plugin`` is the harness's; see :meth:`call_in`)."""
        return self._run(self._harness.call(method, *args, plugin=plugin, **kwargs))

    def call_in(self, plugin_id: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`PluginHarness.call_in`: no argument name is reserved."""
        return self._run(self._harness.call_in(plugin_id, method, *args, **kwargs))

    def publish(self, event: str, payload: Any = None) -> int:
        """See :meth:`PluginHarness.publish`."""
        return self._run(self._harness.publish(event, payload))

    def crash(self, plugin: str | None = None, *, timeout: float = 30.0) -> PluginInfo:
        """See :meth:`PluginHarness.crash`."""
        return self._run(self._harness.crash(plugin, timeout=timeout))

    def wait_for(
        self,
        plugin_id: str,
        predicate: Callable[[PluginInfo], bool],
        timeout: float | None = 30.0,
        *,
        what: str = "",
    ) -> PluginInfo:
        """See :meth:`PluginHarness.wait_for`."""
        return self._run(self._harness.wait_for(plugin_id, predicate, timeout, what=what))

    def wait_for_record(
        self,
        *,
        plugin: str | None = None,
        logger: str | None = None,
        level: int | str | None = None,
        stream: str | None = None,
        text: str = "",
        timeout: float = 20.0,
    ) -> logging.LogRecord:
        """See :meth:`PluginHarness.wait_for_record`."""
        return self._run(
            self._harness.wait_for_record(
                plugin=plugin, logger=logger, level=level, stream=stream, text=text, timeout=timeout
            )
        )
