"""A host's operations on its plugins: calls, events, restarts and stops, and the capabilities
it offers them.

A base class of :class:`~isoplug.Host` (the methods are the host's public API, documented
there), whose state it reads (declared below).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from isoplug.arguments import checked_timeout
from isoplug.control import MAX_OFFERED_NAME_CHARS
from isoplug.errors import LocalProtocolError, hidden_from_pytest
from isoplug.host.binding import HostBinding, running_asyncio_loop
from isoplug.host.capabilities import CapabilityRegistry
from isoplug.host.config import SupervisorConfig
from isoplug.host.host_stage import HostStage
from isoplug.host.observers import watching
from isoplug.host.plugin_calls import check_event_payload
from isoplug.host.status import PluginInfo
from isoplug.wire.values import locate_unencodable, unencodable_error

if TYPE_CHECKING:
    from isoplug.host.runner_set import RunnerSet
    from isoplug.host.supervisor import RunnerSupervisor

__all__ = ["PluginOperations"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest


class _Default(enum.Enum):
    """The default of an option that the host's config holds."""

    CONFIG = "the host's config"


class PluginOperations:
    """The operations half of :class:`~isoplug.Host`."""

    config: SupervisorConfig
    _life: HostStage
    _binding: HostBinding
    _runner_of: dict[str, RunnerSupervisor]
    _supervisors: dict[str, RunnerSupervisor]
    _capabilities: CapabilityRegistry
    _runners: RunnerSet

    if TYPE_CHECKING:

        def _check_here(self, what: str, *, awaited: bool = False) -> None: ...

        def _supervisor(self, plugin_id: str) -> RunnerSupervisor: ...

        def plugin(self, plugin_id: str) -> PluginInfo: ...

    async def call(self, plugin_id: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of ``plugin_id`` with ``args`` and ``kwargs``; return its result.

        Every argument goes to the method untouched: no name is reserved (for isoplug's own
        options, such as a timeout, see :meth:`call_with`). The call may take
        ``config.call_timeout``, including the wait for a starting plugin to be ready. What
        crosses the process boundary, and as what, is in docs/plugins.md. Raises
        :class:`~isoplug.errors.MethodNotFound` (lists the available methods),
        :class:`~isoplug.errors.InvalidParams` (arguments do not fit the signature),
        :class:`~isoplug.errors.RemoteError` (the method raised, traceback included; or its
        result cannot be sent back, ``remote_type`` ``isoplug.errors.UnencodableValue``),
        :class:`~isoplug.errors.UnencodableValue` (an argument cannot be sent: nothing was),
        :class:`~isoplug.errors.RequestTimeout` (saying whether the call was cancelled in the
        plugin or its worker thread runs on),
        :class:`~isoplug.errors.ConnectionBroken` (the runner died during the call, saying how),
        :class:`PluginUnavailable` (unknown, failed, stopped or not ready in time).
        """
        if self._life is not HostStage.RUNNING or running_asyncio_loop() is not self._binding.loop:
            self._check_here(f"call {plugin_id}.{method}", awaited=True)
            self._life.check_running(f"call {plugin_id}.{method}")
        # call_with()'s checks hold by construction here (a tuple, a dict of str keys).
        supervisor = self._runner_of.get(plugin_id) or self._supervisor(plugin_id)
        if watching():
            return await supervisor.observed_call(
                plugin_id, method, args, kwargs, self.config.call_timeout
            )
        # Nobody to tell how it ends (a call refused at once included): one layer less.
        return await supervisor.call(plugin_id, method, args, kwargs, self.config.call_timeout)

    async def call_with(
        self,
        plugin_id: str,
        method: str,
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timeout: float | _Default | None = _Default.CONFIG,
    ) -> Any:
        """:meth:`call` with isoplug's options: ``method(*args, **kwargs)`` in the plugin,
        answered within ``timeout`` seconds (None: no limit; default ``config.call_timeout``).
        Raises what :meth:`call` raises, and ``TypeError`` / ``ValueError`` for options that
        are not of the kinds above."""
        if isinstance(args, str | bytes | bytearray) or not isinstance(args, Sequence):
            raise TypeError(
                f"args must be a tuple or list of positional arguments, got "
                f"{type(args).__name__} {args!r:.60}"
            )
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"kwargs must be a mapping of argument names to values: {kwargs!r:.60}")
        self._check_here(f"call {plugin_id}.{method}", awaited=True)
        self._life.check_running(f"call {plugin_id}.{method}")
        limit = checked_timeout(self.config.call_timeout if timeout is _Default.CONFIG else timeout)
        supervisor = self._supervisor(plugin_id)
        return await supervisor.observed_call(plugin_id, method, tuple(args), dict(kwargs), limit)

    async def publish(self, event: str, payload: Any = None) -> int:
        """Send ``event`` to every ready plugin subscribed to it; return how many runners got
        it. Fire and forget: subscribers' failures are logged by their runner. Raises
        :class:`~isoplug.errors.UnencodableValue` for a payload that cannot be sent (of a type
        that does not cross, or too large), whether or not a plugin subscribes now,
        :class:`PluginUnavailable` when the host is not running, :class:`TypeError` for an
        ``event`` that is not a string, :class:`ValueError` for one that is empty or over 200
        characters (no plugin could subscribe to either)."""
        if not isinstance(event, str):
            raise TypeError(
                f"publish(event, ...): an event's name is a str (what plugins subscribe to with "
                f"@isoplug.on_event), got {type(event).__name__} {event!r:.60}"
            )
        # Its plain value: the wire encodes no str subclass but an Enum's, and a StrEnum's
        # plain value is its value, the name plugins subscribe to.
        event = str.__str__(event)
        if not event or len(event) > MAX_OFFERED_NAME_CHARS:
            # Published, it quietly reached nobody: a typo or a mix-up of arguments.
            got = f"{len(event):,} characters ({event!r:.60}...)" if event else "an empty name"
            raise ValueError(
                f"publish(event, ...): an event's name is 1 to {MAX_OFFERED_NAME_CHARS} "
                f"characters (what plugins may subscribe to with @isoplug.on_event), got {got}"
            )
        self._check_here(f"publish {event!r}", awaited=True)
        self._life.check_running(f"publish {event!r}")
        try:
            sent = sum(s.publish(event, payload) for s in self._supervisors.values())
            if not sent:
                # Checked all the same: a payload that could never be delivered fails where
                # it is published, not only once some plugin subscribes.
                check_event_payload(event, payload)
            return sent
        except LocalProtocolError as exc:
            where = locate_unencodable(payload, "payload")
            error = unencodable_error(f"cannot publish {event!r}", exc, where)
            if error is None:
                raise
            raise error from exc

    async def restart(self, plugin_id: str) -> PluginInfo:
        """Restart the runner of ``plugin_id`` (all plugins of its group); wait until it is
        ready or failed again, and return the plugin's state. A plugin hot reload held back
        from moving to another group across a stop moves first (see "Hot reload" in
        docs/host.md). Raises :class:`PluginUnavailable` when the host is not running."""
        self._check_here(f"restart plugin {plugin_id!r}", awaited=True)
        self._life.check_running(f"restart plugin {plugin_id!r}")
        self._supervisor(plugin_id)  # an unknown id raises, naming the plugins there are
        await self._runners.restart_by_user(plugin_id)
        return self.plugin(plugin_id)

    async def stop(self, plugin_id: str) -> PluginInfo:
        """Stop the runner of ``plugin_id`` (all plugins of its group) gracefully (once the
        host is closed: it is stopped already). A failed plugin is STOPPED too. It stays
        stopped until :meth:`restart`, from the moment the stop is asked: no restart the host
        decides on its own (a crash's, a new configuration's, a hot reload's) undoes it
        (:meth:`set_config` only keeps its configuration). Two stops asked together both
        return once it is STOPPED (a :meth:`restart` asked meanwhile wins, and this returns the
        plugin as that restart left it, restarting or ready: the snapshot is taken as the call
        returns). Returns once what the runner logged and printed has been replayed into the
        host's handlers (up to 5 s after its exit, for slow handlers), so :meth:`log_metrics`
        is final then."""
        self._check_here(f"stop plugin {plugin_id!r}", awaited=True)
        self._life.check_started(f"stop plugin {plugin_id!r}")
        await self._supervisor(plugin_id).stop(by_user=self._life is HostStage.RUNNING)
        return self.plugin(plugin_id)

    def register_capability(self, name: str, function: Callable[..., Any]) -> None:
        """Offer ``function`` to plugins whose manifest lists ``name`` in ``capabilities``.

        Called with the keyword arguments the plugin passes to ``ctx.call_host``; may be
        ``async def``. Plain functions run on the host's event loop and must be quick.
        """
        self._check_here(f"register capability {name!r}")
        self._capabilities.register(name, function)
