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

:class:`PluginLevels` applies each plugin's level (the host folded its settings into it) to
every logger the plugin's code logs on. A runner of one plugin is that plugin's: the level goes
on the root logger, and its ``plugin.<id>`` logger and its package's logger are left to follow
it, so that ``ctx.logger``, the plugin's module loggers and the third-party loggers it uses all
obey it; the loggers of its prints, stderr writes and warnings, and isoplug's, get it too, so
that the plugin's code raising the root's level for its logging does not silence them. In a
group, each plugin's ``plugin.<id>`` and package loggers carry its own level, and
the root (shared loggers: third-party libraries, isoplug's own) the most verbose of them, which
no member's code can raise (:mod:`isoplug.runner.group_logging`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from isoplug.control import LOGS_ROLE, Bootstrap, LogLevelChange, PluginEntry
from isoplug.log_guard import guarded_logger
from isoplug.logs import ForwardingHandler
from isoplug.logs.handler import WRITE_THROUGH_RATE
from isoplug.logs.hooks import install_exception_hooks
from isoplug.logs.kept_forwarder import keep_forwarding
from isoplug.logs.loguru_bridge import install_loguru_bridge
from isoplug.logs.redirect import pipe_stdio, redirect_stdio
from isoplug.logs.source_names import SourceNamingHandler
from isoplug.runner.basic_config import configure_as_if_alone
from isoplug.runner.dispatch import plugin_source
from isoplug.runner.group_logging import group_guard
from isoplug.runner.kept_forwarding import KeptForwarding

__all__ = ["PluginLevels", "capture_python_output", "configure_runner_logging"]

_log = guarded_logger("isoplug.runner")

_FALLBACK_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: The host answers within milliseconds; past this it is not there.
_CONNECT_TIMEOUT = 10.0


def configure_runner_logging(bootstrap: Bootstrap) -> ForwardingHandler | None:
    """Install the forwarding handler; return it (None when forwarding is impossible and
    stderr is used instead)."""
    root = logging.getLogger()
    rate = bootstrap.log_write_through_rate
    settings: dict[str, Any] = {
        "name": bootstrap.runner_id,
        "role": LOGS_ROLE,
        "write_through_rate": WRITE_THROUGH_RATE if rate is None else rate,
        "connect_timeout": _CONNECT_TIMEOUT,
    }
    address = bootstrap.logs_address
    handler: ForwardingHandler
    if len(bootstrap.plugins) > 1:
        # A group: each record is named for the member whose code logged it, which the host
        # cannot tell by the connection (see isoplug.logs.source_names).
        sources = [plugin_source(plugin.id) for plugin in bootstrap.plugins]
        handler = SourceNamingHandler(address, bootstrap.log_token, sources=sources, **settings)
    else:
        handler = ForwardingHandler(address, bootstrap.log_token, **settings)
    if handler.start(_CONNECT_TIMEOUT):
        root.addHandler(handler)
        handler.keep_open(KeptForwarding(handler).closed)
        keep_forwarding(handler)
        configure_as_if_alone()
        return handler
    handler.close(timeout=0)
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(logging.Formatter(_FALLBACK_FORMAT))
    root.addHandler(fallback)
    _log.warning(
        "log forwarding to the host failed (%s); logging to stderr instead",
        # None when it ran out of time: the connection neither came nor failed (a host
        # stopped or starved meanwhile).
        handler.failure or f"no connection to the host within {_CONNECT_TIMEOUT:g} s",
    )
    return None


def capture_python_output(stdio: str = "records") -> None:
    """Route print(), sys.stdout/sys.stderr, warnings, uncaught exceptions and loguru into
    logging. Call after :func:`configure_runner_logging` succeeded: the streams flush their
    last partial lines before its handler closes. ``stdio="pipe"`` (the plugin's choice, see
    Manifest.stdio) leaves print() and sys.stdout/sys.stderr to the pipes the host reads,
    through line-buffered C streams; the rest still becomes records."""
    if stdio == "pipe":
        pipe_stdio()
    else:
        redirect_stdio()
    install_exception_hooks()
    install_loguru_bridge()


class PluginLevels:
    """The level of each plugin of this runner, applied as the module docstring says."""

    def __init__(self, plugins: Sequence[PluginEntry]) -> None:
        self._levels = {plugin.id: _parse_level(plugin.log_level) for plugin in plugins}
        #: The top-level module of each plugin's entry: its modules log under it.
        self._packages = {
            plugin.id: plugin.entry.partition(":")[0].partition(".")[0] for plugin in plugins
        }
        #: Loggers the host set a level on by name: a plugin's level set later leaves them
        #: at it, as a restart does (it sends the plugins' levels first, then the loggers').
        self._named: set[str] = set()

    def apply(self) -> None:
        if not self._levels:
            return
        if len(self._levels) == 1:
            ((plugin_id, level),) = self._levels.items()
            self._set("", level)
            # NOTSET: they follow the root, even where the plugin's code had set them itself.
            self._set(f"plugin.{plugin_id}", logging.NOTSET)
            self._set(self._packages[plugin_id], logging.NOTSET)
            # Not the output's: a plugin raising the root's level for its logging
            # (basicConfig(level=logging.ERROR)) would drop its prints, which a program of its
            # own shows whatever logging's levels, and isoplug's word on the runner.
            for name in _output_loggers(plugin_id):
                self._set(name, level)
            return
        self._set("", min(self._levels.values()))
        for plugin_id, level in self._levels.items():
            self._set(f"plugin.{plugin_id}", level)
            self._set(self._packages[plugin_id], level)

    def _set(self, name: str, level: int) -> None:
        if name not in self._named:
            _set_level(name, level)

    def change(self, change: LogLevelChange) -> None:
        """Set a plugin's or a logger's level, as the host asked."""
        if not change.plugin:
            self._named.add(change.logger)
            _set_level(change.logger, change.level, by_host=True)
            return
        if change.plugin not in self._levels:
            raise ValueError(f"this runner has no plugin {change.plugin!r}")
        self._levels[change.plugin] = change.level
        self.apply()


def _set_level(name: str, level: int, *, by_host: bool = False) -> None:
    """Set logger ``name``'s level (``by_host``: the host named the logger); in a group, the
    root's is the group's, which its guard keeps (:mod:`isoplug.runner.group_logging`)."""
    guard = group_guard()
    if not name and guard is not None:
        guard.set_group_level(level, by_host=by_host)
    else:
        logging.getLogger(name or None).setLevel(level)


def _output_loggers(plugin_id: str) -> tuple[str, ...]:
    """The loggers of a plugin's output that is no logging call of its code (prints, stderr
    writes, warnings; inside its code and outside), and isoplug's own in the runner."""
    source = f"plugin.{plugin_id}"
    return (
        "stdout",
        "stderr",
        "py.warnings",
        f"{source}.stdout",
        f"{source}.stderr",
        f"{source}.py.warnings",
        "isoplug",
        f"{source}.isoplug",
    )


def _parse_level(text: str) -> int:
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if isinstance(level, int):
        return level
    _log.warning("unknown log level %r; using INFO", text)
    return logging.INFO
