"""The host end of a runner's control connection: who may hold it, what the runner sends on it.

Each runner process opens one control connection, presenting its token. Its supervisor's
:class:`ControlLink` keeps it for the runner's current life
(:class:`~isoplug.host.life.RunnerLife`) and refuses any other, during the handshake
(:meth:`ControlLink.refusal`): a connection the kernel says comes from another process, or a
second one, never reaches a handler, whatever token it shows. It hands the runner's ready report
to that life; and runs the host capabilities its plugins call, once their manifests grant them.
What the host sends on it comes from the supervisor (events, log levels), :mod:`isoplug.host.calls`
(calls) and the life (pings, the shutdown request).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import msgspec

from isoplug.control import (
    CAPABILITY,
    EVENT_COUNTS,
    MAX_INHERITED,
    READY,
    CapabilityDenied,
    CapabilityRequest,
    EventCounts,
    LoadFailure,
    ReadyReport,
)
from isoplug.errors import IsoplugError
from isoplug.host.life import RunnerLife
from isoplug.host.manifest import Manifest
from isoplug.host.offers import checked_summaries
from isoplug.log_guard import guarded_logger
from isoplug.rpc import Handler, Peer
from isoplug.transport.stream import PeerCredentials
from isoplug.wire.sanitize import clean_text

#: Cap for a plugin id or capability name the runner sent, quoted in a message.
_MAX_NAME_CHARS = 200

__all__ = ["CapabilityInvoker", "ControlLink"]

_log = guarded_logger("isoplug.host")


class _UncheckedReport(msgspec.Struct, frozen=True):
    """A :class:`~isoplug.control.ReadyReport` whose summaries are still to be checked one by
    one (see :func:`~isoplug.host.offers.checked_summaries`), so that a refusal names its
    plugin."""

    pid: int
    loaded: dict[str, Any] = {}
    failures: tuple[LoadFailure, ...] = ()
    inherited: Annotated[dict[int, int], msgspec.Meta(max_length=MAX_INHERITED)] = {}


CapabilityInvoker = Callable[[str, dict[str, Any], str], Awaitable[Any]]
"""``invoke_capability(name, kwargs, plugin)``: runs the host capability ``name`` for the
plugin ``plugin``."""


class ControlLink:
    """The control connections of the runner ``runner_id`` (see the module docstring).

    ``manifests`` are its plugins' (by plugin id), ``current()`` is its current life (None
    before the first), ``invoke_capability`` runs a host capability once its grant is checked.
    """

    def __init__(
        self,
        runner_id: str,
        manifests: Mapping[str, Manifest],
        invoke_capability: CapabilityInvoker,
        current: Callable[[], RunnerLife | None],
    ) -> None:
        self.runner_id = runner_id
        self._manifests = manifests
        self._invoke_capability = invoke_capability
        self._current = current

    def handlers(self) -> Mapping[str, Handler]:
        return {
            READY: self._on_ready,
            CAPABILITY: self._on_capability,
            EVENT_COUNTS: self._on_event_counts,
        }

    def refusal(self, credentials: PeerCredentials | None) -> str | None:
        """Why a control connection whose token matched is refused, or None: it must come from
        the current runner process (the kernel's word, where the socket has one) and be its
        first. Called during the handshake, before the connection can send a request."""
        life = self._current()
        process = None if life is None else life.process
        if life is None or process is None:
            return f"runner {self.runner_id}: no runner process is starting"
        if credentials is not None and credentials.pid != process.pid:
            # It had the runner's token: the runner's account of an early exit tells this.
            life.refused = refused = (
                f"runner {self.runner_id}: the control connection comes from pid "
                f"{credentials.pid}, not from the runner (pid {process.pid})"
            )
            return refused
        if life.peer is not None:
            return f"runner {self.runner_id}: the runner's control connection is already open"
        return None

    def refused_for_good(self, why: str) -> None:
        """The current runner's control connection is refused for a reason no restart
        changes (``why``): its exit before ready is a lasting failure."""
        life = self._current()
        if life is not None:
            life.refused_for_good = why

    async def serve(self, peer: Peer) -> None:
        """Own the control connection of the current runner until it closes."""
        life = self._current()
        # Checked at the handshake already; nothing awaits in between, so this only guards.
        refusal = self.refusal(peer.stream.peer_credentials)
        if life is None or refusal is not None:
            _log.warning("refused a control connection: %s", refusal)
            return
        life.peer = peer
        life.connected = True
        try:
            await peer.wait_closed()
        finally:
            if life.peer is peer:
                life.peer = None

    def _on_ready(self, params: Any) -> None:
        """Take the runner's one ready report, keeping only what it says of its own plugins; a
        plugin that declares more than the host accepts is refused (as one that cannot be
        loaded: see :mod:`isoplug.host.offers`).

        Raises :class:`~isoplug.errors.IsoplugError` (sent back to the runner) for a second
        report: only the runner's own session code sends one, once; a plugin that forges
        another (during its ``setup``, say) must not rewrite what the host believes.
        """
        unchecked = msgspec.convert(params, _UncheckedReport)
        loaded, refused = checked_summaries(unchecked.loaded)
        report = ReadyReport(
            unchecked.pid, loaded, (*unchecked.failures, *refused), unchecked.inherited
        )
        life = self._current()
        if life is None:
            return
        if life.ready.done():
            _log.warning(
                "runner %s sent a second ready report; refused (a plugin forging one?)",
                self.runner_id,
            )
            raise IsoplugError("the runner already reported ready; a second report is refused")
        life.ready.set_result(self._own_plugins_only(report))

    def _on_event_counts(self, params: Any) -> None:
        """Take the runner's final count of events handled and dropped (see
        :data:`~isoplug.control.EVENT_COUNTS`); raises :class:`IsoplugError` (sent back to
        the runner) for what is not one."""
        try:
            counts = msgspec.convert(params, EventCounts)
        except msgspec.ValidationError:
            raise IsoplugError(
                "not a count of events per plugin ([{id: dropped}, {id: handled}])"
            ) from None
        life = self._current()
        if life is not None:
            life.health.events.note_told(counts.dropped, counts.handled, final=True)

    def _own_plugins_only(self, report: ReadyReport) -> ReadyReport:
        """``report`` without entries about plugins this runner does not run (reported once)."""
        foreign = [pid for pid in report.loaded if pid not in self._manifests]
        foreign += [f.plugin_id for f in report.failures if f.plugin_id not in self._manifests]
        if not foreign:
            return report
        _log.warning(
            "runner %s reported on plugins it does not run (%s); ignored",
            self.runner_id,
            ", ".join(repr(clean_text(pid, _MAX_NAME_CHARS)) for pid in foreign[:5])
            + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""),
        )
        return ReadyReport(
            pid=report.pid,
            loaded={pid: s for pid, s in report.loaded.items() if pid in self._manifests},
            failures=tuple(f for f in report.failures if f.plugin_id in self._manifests),
            inherited=report.inherited,
        )

    async def _on_capability(self, params: Any) -> Any:
        request = msgspec.convert(params, CapabilityRequest)
        manifest = self._manifests.get(request.plugin)
        # Never trust the runner: check the grant here, whatever the runner checked.
        if manifest is None:
            plugin = clean_text(request.plugin, _MAX_NAME_CHARS)
            raise CapabilityDenied(f"runner {self.runner_id!r} has no plugin {plugin!r}")
        if request.name not in manifest.capabilities:
            name = clean_text(request.name, _MAX_NAME_CHARS)
            raise CapabilityDenied(
                f"plugin {request.plugin!r} may not call host capability {name!r}: "
                f"not in 'capabilities' of {manifest.path}"
            )
        return await self._invoke_capability(request.name, request.kwargs, request.plugin)
