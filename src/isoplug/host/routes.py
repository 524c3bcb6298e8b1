"""Which connection the host's listener accepts, and who serves it.

Each runner process connects back with a hello naming its runner and a *role*. The runner's
token proves the name; the role says who serves the connection (:class:`Route`): the
``"control"`` role goes to the runner's supervisor. A hello with an unknown role, or for an
unknown runner, is refused during the handshake, so the client gets a reject rather than a
session that ends as soon as it opens; a flood of them is summed up, not logged one by one.

Every handler the host serves a runner with is marked
:func:`~isoplug.rpc.dispatch.private_errors`: whatever fails while the host answers a runner's
request (a capability, the request's params, the result's encoding, a cancellation, a bug of
isoplug), the runner learns the type and message, never the host's traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from isoplug.control import CONTROL_ROLE
from isoplug.host.runner_versions import RunnerVersions
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.log_guard import guarded_logger
from isoplug.logs.report_throttle import ReportThrottle, report_refusal
from isoplug.rpc import Handler, Peer
from isoplug.rpc.dispatch import private_errors
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Hello
from isoplug.wire.sanitize import clean_text

__all__ = ["ConnectionRoutes", "Route"]

_log = guarded_logger("isoplug.host")

#: Cap for a name or role from a hello (unauthenticated peer text) quoted in a record.
_MAX_HELLO_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Route:
    """How the host serves one connection role: who may open it (why a connection whose token
    matched is refused, during the handshake), handlers in place before the first message,
    then a coroutine that owns the connection until it closes."""

    admit: Callable[[RunnerSupervisor, PeerCredentials | None], str | None]
    handlers: Callable[[RunnerSupervisor, Hello], Mapping[str, Handler]]
    serve: Callable[[RunnerSupervisor, Peer], Awaitable[None]]


class ConnectionRoutes:
    """The host listener's side of every handshake, over the runners in ``supervisors``."""

    def __init__(self, supervisors: Mapping[str, RunnerSupervisor], report_interval: float):
        self._supervisors = supervisors
        self._refusals = ReportThrottle(report_interval, timer=True)
        self._versions = RunnerVersions()
        #: Connection roles and who serves them.
        self.routes: dict[str, Route] = {
            CONTROL_ROLE: Route(
                RunnerSupervisor.admit_control,
                lambda supervisor, _hello: supervisor.control_handlers(),
                RunnerSupervisor.serve_control,
            ),
        }

    def close(self) -> None:
        self._refusals.close()

    def family_of(self, pid: int) -> str | None:
        """The runner whose process ``pid`` is (the kernel's word on who connected, before it
        said anything): its connection takes a handshake place of that runner's own, which
        strangers cannot hold (see :mod:`isoplug.rpc.gate`). Only the runner itself opens a
        control connection, so its descendants are strangers here."""
        for supervisor in self._supervisors.values():
            if supervisor.pid == pid:
                return supervisor.runner_id
        return None

    def expected_token(self, hello: Hello) -> str | None:
        """The token the runner named in ``hello`` must present; None refuses the hello."""
        if hello.role not in self.routes:
            self._warn_unknown_role(hello)
            return None
        supervisor = self._supervisors.get(hello.name)
        return supervisor.expected_token() if supervisor is not None else None

    def admit(self, hello: Hello, credentials: PeerCredentials | None) -> str | None:
        route = self.routes.get(hello.role)
        supervisor = self._supervisors.get(hello.name)
        if route is None or supervisor is None:
            return "unknown runner or role"  # the token lookup refused it already
        refusal = route.admit(supervisor, credentials)
        if refusal is None and hello.role == CONTROL_ROLE:
            # Its runner, whose versions the handshake checks right after this.
            lasting = self._versions.lasting(supervisor.runner_id, hello)
            if lasting is not None:
                supervisor.control.refused_for_good(lasting)
        return refusal

    def handlers_for(self, hello: Hello) -> Mapping[str, Handler]:
        route = self.routes.get(hello.role)
        supervisor = self._supervisors.get(hello.name)
        if route is None or supervisor is None:
            return {}
        return {
            method: private_errors(handler)
            for method, handler in route.handlers(supervisor, hello).items()
        }

    async def serve(self, peer: Peer) -> None:
        hello = peer.remote_hello
        assert hello is not None
        route = self.routes.get(hello.role)
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
            f"{', '.join(self.routes)})",
            _log.warning,
        )
