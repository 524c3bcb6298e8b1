"""Where the runner's ``logging`` output goes: to the host, record by record, full fidelity.

:func:`configure_runner_logging` puts a :class:`~isoplug.logs.ForwardingHandler` on the root
logger. It opens the runner's second connection to the host (role ``"logs"``, with the log token, to
the host's log listener), which its own sender thread drives: records keep flowing while a
plugin blocks the event loop, and at moderate rates each record is in the kernel before
``logger.info()`` returns, so it survives the runner being killed. If that connection cannot be
opened, records go to stderr instead, which the host captures line by line: degraded, never
lost.

Once records are forwarded, :func:`capture_python_output` makes every other Python-level way
out of a plugin a record too: ``print()`` and ``sys.stdout``/``sys.stderr`` writes (which then
never block on the host, see :mod:`isoplug.logs.streams`), warnings, uncaught exceptions in any
thread or ``__del__`` (:mod:`isoplug.logs.hooks`), and loguru's default sink
(:mod:`isoplug.logs.loguru_bridge`). Output at the file descriptor level (C extensions, child
processes, faulthandler) still goes to the pipes the host reads.
"""

from __future__ import annotations

import logging
import sys

from isoplug.control import LOGS_ROLE, Bootstrap, LogLevelChange
from isoplug.logs import ForwardingHandler
from isoplug.logs.handler import WRITE_THROUGH_RATE
from isoplug.logs.hooks import install_exception_hooks
from isoplug.logs.loguru_bridge import install_loguru_bridge
from isoplug.logs.redirect import redirect_stdio

__all__ = ["apply_log_level", "capture_python_output", "configure_runner_logging"]

_FALLBACK_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: The host answers within milliseconds; past this it is not there.
_CONNECT_TIMEOUT = 10.0


def configure_runner_logging(bootstrap: Bootstrap) -> ForwardingHandler | None:
    """Install the forwarding handler and each plugin's level; return the handler (None when
    forwarding is impossible and stderr is used instead)."""
    root = logging.getLogger()
    root.setLevel(bootstrap.log_level)
    for plugin in bootstrap.plugins:
        logging.getLogger(f"plugin.{plugin.id}").setLevel(plugin.log_level)
    rate = bootstrap.log_write_through_rate
    handler = ForwardingHandler(
        bootstrap.log_address or bootstrap.address,
        bootstrap.log_token,
        name=bootstrap.runner_id,
        role=LOGS_ROLE,
        write_through_rate=WRITE_THROUGH_RATE if rate is None else rate,
        connect_timeout=_CONNECT_TIMEOUT,
    )
    if handler.start(_CONNECT_TIMEOUT):
        root.addHandler(handler)
        return handler
    handler.close(timeout=0)
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(logging.Formatter(_FALLBACK_FORMAT))
    root.addHandler(fallback)
    logging.getLogger("isoplug.runner").warning(
        "log forwarding to the host failed (%s); logging to stderr instead", handler.failure
    )
    return None


def capture_python_output() -> None:
    """Route print(), sys.stdout/sys.stderr, warnings, uncaught exceptions and loguru into
    logging. Call after :func:`configure_runner_logging` succeeded: the streams flush their
    last partial lines before its handler closes."""
    redirect_stdio()
    install_exception_hooks()
    install_loguru_bridge()


def apply_log_level(change: LogLevelChange) -> None:
    """Set a logger's level in this runner, as the host asked."""
    logging.getLogger(change.logger or None).setLevel(change.level)
