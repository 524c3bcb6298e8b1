"""``isoplug.Host``: run a directory of plugins from inside an asyncio application.

::

    async with isoplug.Host(plugins_dir="plugins") as host:
        host.register_capability("clock.now", time.time)
        await host.wait_ready()
        print(await host.call("greeter", "greet", name="Ada"))
        await host.publish("tick", {"n": 1})

Two listeners (unix sockets in private directories) serve every runner. Each runner process
gets its own random tokens; the hello's name says which runner it claims to be, the token
proves it, and the kernel's word on the connecting pid (``SO_PEERCRED``) must agree, before
the handshake ends (the route's ``admit``). On the event loop's listener, connections are
routed by their hello *role* through :attr:`Host._routes`: the ``"control"`` role goes to the
runner's supervisor; other roles are refused with a warning. Each runner's ``"logs"``
connection goes to the other listener, the :class:`~isoplug.host.logbridge.LogBridge`'s, whose
threads replay its records; its stdout and stderr pipes are read and replayed by threads too
(:mod:`isoplug.host.stdio`): the loop never runs a logging handler for a plugin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

from isoplug.control import CONTROL_ROLE
from isoplug.host.capabilities import CapabilityRegistry
from isoplug.host.config import SupervisorConfig
from isoplug.host.logbridge import LogBridge
from isoplug.host.registry import discover, plan_runners
from isoplug.host.status import PluginInfo, PluginState, PluginUnavailable, StateChange
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.logs import LogMetrics, ReplayLimits
from isoplug.logs.report_throttle import ReportThrottle, report_refusal
from isoplug.rpc import Handler, Peer, serve
from isoplug.transport import Listener
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Hello
from isoplug.wire.sanitize import clean_text

__all__ = ["Host"]

_log = logging.getLogger("isoplug.host")

#: Cap for a name or role from a hello (unauthenticated peer text) quoted in a record.
_MAX_HELLO_CHARS = 200

_USE_DEFAULT: Final = object()
#: States in which a plugin will not change any more without someone asking.
_SETTLED = frozenset({PluginState.READY, PluginState.FAILED, PluginState.STOPPED})


@dataclasses.dataclass(frozen=True)
class _Route:
    """How the host serves one connection role: who may open it (why a connection whose token
    matched is refused, during the handshake), handlers in place before the first message,
    then a coroutine that owns the connection until it closes."""

    admit: Callable[[RunnerSupervisor, PeerCredentials | None], str | None]
    handlers: Callable[[RunnerSupervisor, Hello], Mapping[str, Handler]]
    serve: Callable[[RunnerSupervisor, Peer], Awaitable[None]]


class Host:
    """Supervises one runner per plugin (or per group) found in ``plugins_dir``.

    Use as ``async with Host(...) as host``; leaving the block (normally, by exception or by
    cancellation) stops every runner: shutdown request, then SIGTERM, then SIGKILL. Bad
    plugins are reported in :attr:`problems` (and logged) and skipped.

    ``on_change`` is called (on the event loop, must not block) with every
    :class:`~isoplug.host.status.StateChange`; every change is also logged on
    ``isoplug.host``.
    """

    def __init__(
        self,
        plugins_dir: str | os.PathLike[str],
        *,
        config: SupervisorConfig | None = None,
        on_change: Callable[[StateChange], None] | None = None,
        log_limits: ReplayLimits | None = None,
    ) -> None:
        self.plugins_dir = Path(plugins_dir)
        self.config = config or SupervisorConfig()
        self._on_change = on_change
        self.problems: list[str] = []
        self._capabilities = CapabilityRegistry()
        self._supervisors: dict[str, RunnerSupervisor] = {}
        self._runner_of: dict[str, RunnerSupervisor] = {}
        self._listener: Listener | None = None
        self._changed = asyncio.Event()
        self._log_bridge = LogBridge(self._supervisors.get, log_limits)
        # Connections refused after their hello: a flood of them is summed up, not logged.
        self._refusals = ReportThrottle(self._log_bridge.limits.report_interval, timer=True)
        #: Connection roles and who serves them.
        self._routes: dict[str, _Route] = {
            CONTROL_ROLE: _Route(
                RunnerSupervisor.admit_control,
                lambda supervisor, _hello: supervisor.control_handlers(),
                RunnerSupervisor.serve_control,
            ),
        }

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Discover plugins, open the listener and start every runner (does not wait for them
        to be ready: see :meth:`wait_ready`). Raises :class:`FileNotFoundError` /
        :class:`NotADirectoryError` when ``plugins_dir`` is unusable."""
        discovery = discover(self.plugins_dir)
        plans, grouping_problems = plan_runners(discovery.manifests)
        self.problems = [*discovery.problems, *grouping_problems]
        for problem in self.problems:
            _log.error("%s", problem)
        self._listener = await serve(
            "unix:",
            self._expected_token,
            self._serve_connection,
            handlers=self._handlers_for,
            name="isoplug-host",
            admit=self._admit,
            handshake_timeout=self.config.handshake_timeout,
            max_handshakes=self.config.max_handshakes,
        )
        self._log_bridge.open(self.config.handshake_timeout, self.config.max_handshakes)
        address = str(self._listener.address)
        for plan in plans:
            supervisor = RunnerSupervisor(
                plan,
                address=address,
                log_address=self._log_bridge.address,
                config=self.config,
                invoke_capability=self._capabilities.invoke,
                notify=self._state_changed,
                stdio_destination=self._log_bridge.stdio_destination,
            )
            self._supervisors[plan.runner_id] = supervisor
            for manifest in plan.manifests:
                self._runner_of[manifest.id] = supervisor
        for supervisor in self._supervisors.values():
            supervisor.start()

    async def aclose(self) -> None:
        """Stop every runner and the listener. Idempotent; safe to cancel (runners are then
        killed at once)."""
        supervisors = list(self._supervisors.values())
        stopping = asyncio.ensure_future(
            asyncio.gather(*(s.aclose() for s in supervisors), return_exceptions=True)
        )
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            for supervisor in supervisors:
                supervisor.kill_now()
            await stopping
            raise
        finally:
            if self._listener is not None:
                await self._listener.aclose()
            # The runners have stopped: their log connections end as soon as what they sent
            # last is replayed (a thread of the bridge's replays it; waiting for it here must
            # not block the loop).
            await asyncio.to_thread(self._log_bridge.close)
            self._refusals.close()

    # -- plugins ------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """A snapshot of every plugin's state, pid, restart count and last exit, by id."""
        return [self._runner_of[pid].info(pid) for pid in sorted(self._runner_of)]

    def plugin(self, plugin_id: str) -> PluginInfo:
        """The state of one plugin; raises :class:`PluginUnavailable` for an unknown id."""
        return self._supervisor(plugin_id).info(plugin_id)

    async def wait_ready(self, timeout: float | None = None) -> list[PluginInfo]:
        """Wait until every plugin is ready, failed or stopped; return :meth:`plugins`.

        Raises :class:`TimeoutError` after ``timeout`` seconds. A cancel point.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                infos = self.plugins()
                if all(info.state in _SETTLED for info in infos):
                    return infos
                await changed.wait()

    async def wait_for(
        self,
        plugin_id: str,
        predicate: Callable[[PluginInfo], bool],
        timeout: float | None = None,
    ) -> PluginInfo:
        """Wait until ``predicate(host.plugin(plugin_id))`` holds; return that snapshot.

        Raises :class:`TimeoutError` after ``timeout`` seconds. A cancel point.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                info = self.plugin(plugin_id)
                if predicate(info):
                    return info
                await changed.wait()

    async def call(
        self,
        plugin_id: str,
        method: str,
        /,
        timeout: float | object | None = _USE_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` of ``plugin_id`` with keyword arguments; return its result.

        ``timeout`` (reserved: a plugin method cannot take an argument named so) defaults to
        ``config.call_timeout`` and includes waiting for a starting plugin to be ready. Raises
        :class:`~isoplug.errors.MethodNotFound` (lists the available methods),
        :class:`~isoplug.errors.InvalidParams` (arguments do not fit the signature),
        :class:`~isoplug.errors.RemoteError` (the method raised; traceback included),
        :class:`~isoplug.errors.RequestTimeout` (cancelled in the plugin),
        :class:`~isoplug.errors.ConnectionBroken` (the runner died during the call, saying how),
        :class:`PluginUnavailable` (unknown, failed, stopped or not ready in time).
        """
        limit = self.config.call_timeout if timeout is _USE_DEFAULT else timeout
        assert limit is None or isinstance(limit, int | float)
        return await self._supervisor(plugin_id).call(plugin_id, method, kwargs, limit)

    async def publish(self, event: str, payload: Any = None) -> int:
        """Send ``event`` to every ready plugin subscribed to it; return how many runners got
        it. Fire and forget: subscribers' failures are logged by their runner."""
        return sum(s.publish(event, payload) for s in self._supervisors.values())

    async def restart(self, plugin_id: str) -> PluginInfo:
        """Restart the runner of ``plugin_id`` (all plugins of its group); wait until it is
        ready or failed again, and return the plugin's state."""
        await self._supervisor(plugin_id).restart()
        return self.plugin(plugin_id)

    async def stop(self, plugin_id: str) -> PluginInfo:
        """Stop the runner of ``plugin_id`` (all plugins of its group) gracefully."""
        await self._supervisor(plugin_id).stop()
        return self.plugin(plugin_id)

    async def set_log_level(
        self, plugin_id: str, level: int | str, logger: str | None = None
    ) -> None:
        """Set the level of a plugin's logger, in its runner (filtered at the source).

        ``logger=None`` means the whole plugin: the runner's root logger when the plugin has a
        runner of its own, its ``plugin.<id>`` logger in a group. Otherwise ``logger`` is a
        logger name as the plugin uses it. The level survives restarts. Raises
        :class:`PluginUnavailable` for an unknown plugin and ``ValueError`` for an unknown level
        name.
        """
        numeric = logging.getLevelName(level) if isinstance(level, str) else level
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        supervisor = self._supervisor(plugin_id)
        if logger is None:
            logger = "" if len(supervisor.manifests) == 1 else f"plugin.{plugin_id}"
        await supervisor.set_log_level(logger, numeric)

    def log_metrics(self, plugin_id: str) -> LogMetrics:
        """What the log pipeline received from the runner of ``plugin_id`` (for a group: the
        group's runner): records received, replayed, filtered, dropped by reason, bytes, last
        record time. Kept across restarts."""
        return self._log_bridge.metrics(self._supervisor(plugin_id).runner_id)

    def register_capability(self, name: str, function: Callable[..., Any]) -> None:
        """Offer ``function`` to plugins whose manifest lists ``name`` in ``capabilities``.

        Called with the keyword arguments the plugin passes to ``ctx.call_host``; may be
        ``async def``. Plain functions run on the host's event loop and must be quick.
        """
        self._capabilities.register(name, function)

    # -- internals ----------------------------------------------------------------------------

    def _supervisor(self, plugin_id: str) -> RunnerSupervisor:
        supervisor = self._runner_of.get(plugin_id)
        if supervisor is None:
            known = ", ".join(sorted(self._runner_of)) or "none"
            raise PluginUnavailable(f"no plugin {plugin_id!r} (plugins: {known})")
        return supervisor

    def _state_changed(self, change: StateChange) -> None:
        who = ", ".join(change.plugin_ids) or change.runner_id
        _log.log(
            change.level,
            "plugin %s: %s",
            who,
            change.message,  # sanitized: the supervisor builds it, quoting runner text cleaned
            extra={"plugin_ids": change.plugin_ids, "state": change.state.value},
        )
        if self._on_change is not None:
            try:
                self._on_change(change)
            except Exception:
                _log.exception("on_change callback failed")
        self._changed.set()
        self._changed = asyncio.Event()

    def _expected_token(self, hello: Hello) -> str | None:
        """The token the runner named in ``hello`` must present; None refuses the hello."""
        if hello.role not in self._routes:
            # Refused during the handshake, so the client gets a reject rather than a
            # session that ends as soon as it opens.
            self._warn_unknown_role(hello)
            return None
        supervisor = self._supervisors.get(hello.name)
        return supervisor.expected_token() if supervisor is not None else None

    def _admit(self, hello: Hello, credentials: PeerCredentials | None) -> str | None:
        route = self._routes.get(hello.role)
        supervisor = self._supervisors.get(hello.name)
        if route is None or supervisor is None:
            return "unknown runner or role"  # the token lookup refused it already
        return route.admit(supervisor, credentials)

    def _handlers_for(self, hello: Hello) -> Mapping[str, Handler]:
        route = self._routes.get(hello.role)
        supervisor = self._supervisors.get(hello.name)
        if route is None or supervisor is None:
            return {}
        return route.handlers(supervisor, hello)

    async def _serve_connection(self, peer: Peer) -> None:
        hello = peer.remote_hello
        assert hello is not None
        route = self._routes.get(hello.role)
        supervisor = self._supervisors.get(hello.name)
        if route is None or supervisor is None:
            # The handshake already refuses both; a runner removed meanwhile ends up here.
            self._warn_unknown_role(hello)
            return
        await route.serve(supervisor, peer)

    def _warn_unknown_role(self, hello: Hello) -> None:
        report_refusal(
            self._refusals,
            f"refused a connection from runner '{clean_text(hello.name, _MAX_HELLO_CHARS)}': "
            f"unknown connection role '{clean_text(hello.role, _MAX_HELLO_CHARS)}' (known: "
            f"{', '.join(self._routes)})",
            _log.warning,
        )
