"""Timing of supervision: how long to wait for a runner at each step of its life."""

from __future__ import annotations

import dataclasses

__all__ = ["SupervisorConfig"]


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """Timing of supervision. The defaults suit production; tests shorten them."""

    #: Import + ``setup`` of every plugin of a runner. Generous: setup may open connections.
    ready_timeout: float = 15.0
    #: A hung runner is noticed within about ``health_interval + health_timeout``.
    health_interval: float = 2.0
    #: A ping is answered inline by the runner's event loop in well under a millisecond;
    #: seconds of silence mean the loop is blocked.
    health_timeout: float = 2.0
    #: Teardown hooks get ``teardown_timeout`` inside the runner; this adds room for goodbye.
    shutdown_timeout: float = 5.0
    teardown_timeout: float = 3.0
    #: Python exits promptly on SIGTERM unless a plugin handles it; then SIGKILL.
    terminate_timeout: float = 2.0
    #: Default timeout of ``Host.call``.
    call_timeout: float = 30.0
    #: Log level of the runner's root logger.
    log_level: str = "INFO"
    #: A runner's hello follows its connect within milliseconds; a connection that has not
    #: authenticated within this (silent, or trickling bytes) is closed, on both listeners.
    handshake_timeout: float = 5.0
    #: Connections waiting to authenticate at once, per listener; past it, new ones are
    #: refused at once (see :mod:`isoplug.rpc.gate`).
    max_handshakes: int = 128
