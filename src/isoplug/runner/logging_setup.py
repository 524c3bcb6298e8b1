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
the root (shared loggers: third-party libraries, isoplug's own) the most verbose of them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from isoplug.control import LOGS_ROLE, Bootstrap, LogLevelChange, PluginEntry
from isoplug.logs import ForwardingHandler
from isoplug.logs.handler import WRITE_THROUGH_RATE
from isoplug.logs.hooks import install_exception_hooks
from isoplug.logs.loguru_bridge import install_loguru_bridge
from isoplug.logs.redirect import pipe_stdio, pipe_streams, redirect_stdio
from isoplug.logs.rendered_records import keep_forwarding, kept_forwarder, render_through
from isoplug.logs.source_names import SourceNamingHandler
from isoplug.runner.dispatch import plugin_source

__all__ = [
    "KeptForwarding",
    "PluginLevels",
    "capture_python_output",
    "configure_runner_logging",
    "watch_forwarding",
]

_log = logging.getLogger("isoplug.runner")
#: The lock logging's own functions hold while they change handlers or a configuration
#: (``logging._lock``, 3.11 to 3.13; a Python without it gets a lock of its own, which only
#: isoplug's restores then share).
_LOGGING_LOCK: Any = getattr(logging, "_lock", None) or threading.RLock()

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
        return handler
    handler.close(timeout=0)
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(logging.Formatter(_FALLBACK_FORMAT))
    root.addHandler(fallback)
    logging.getLogger("isoplug.runner").warning(
        "log forwarding to the host failed (%s); logging to stderr instead", handler.failure
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


#: The loggers of isoplug's own making in a runner, which a plugin's logging configuration
#: may disable in passing and KeptForwarding enables again: the print() streams' (``stdout``,
#: ``stderr``, ``plugin.<id>.stdout``...), ``ctx.logger`` and its children, isoplug's own.
_ISOPLUG_LOGGERS = ("stdout", "stderr", "plugin.", "isoplug.")


class KeptForwarding:
    """What the runner does when a plugin's logging configuration closes its forwarding
    handler, as ``basicConfig(force=True)``, ``dictConfig()`` and ``fileConfig()`` do to every
    handler they replace: the handler stays open
    (:meth:`~isoplug.logs.ForwardingHandler.keep_open`), goes back on the root logger once the
    configuration is done, and the loggers of isoplug's own making that the configuration
    disabled are enabled again. What the plugin's own handlers write to stdout and stderr
    arrives as the records they render, once each (:mod:`isoplug.logs.rendered_records`). One
    INFO record says so; a WARNING names the plugin's own loggers that the configuration
    disabled, whose records now reach no handler.

    A configuration sets the root's handlers (and ``logging.config`` disables loggers) at its
    very end, and the plugin's next line may log right after it, maybe while another thread
    logs: so the restore is made in the configuring thread, as the configuration's last step
    (this one included): ``logging.config``'s steps that do it are wrapped
    (:func:`_restore_after_configurations`), and for ``basicConfig(force=True)`` the root's
    next ``addHandler`` (:func:`_restore_at_next_root_handler`). A thread reports once
    logging's lock is free, and restores whatever those missed. A close that is no
    configuration's (``logging.shutdown()`` before ``os._exit()``, as a forked child ends)
    closes the handler.
    """

    def __init__(self, handler: ForwardingHandler) -> None:
        self._handler = handler
        self._restoring = threading.Lock()
        self._told = False

    def closed(self) -> bool:
        """Called by the handler's close(): True (it stays open) when a configuration closes
        it, maybe holding logging's lock (the thread waits for it: it restores after the
        configuration's last change). A close of the plugin's own (``logging.shutdown()``
        before ``os._exit()``, as a forked child ends) closes it."""
        if not _closed_by_a_configuration(sys._getframe(2)):
            return False
        _restore_after_configurations(self._handler)
        _restore_at_next_root_handler(self._handler)
        if self._restoring.acquire(blocking=False):  # else one is on its way already
            thread = threading.Thread(
                target=self._restore_and_report, name="isoplug-log-restore", daemon=True
            )
            thread.start()
        return True

    def _restore_and_report(self) -> None:
        try:
            # Taken as a configuration takes it, to its end: this waits for that end.
            with _LOGGING_LOCK:
                disabled = _restore(self._handler)
        finally:
            self._restoring.release()
        if not self._told:
            self._told = True
            _log.info(
                "the plugin's logging configuration closed isoplug's log handler; isoplug "
                "kept it on the root logger, so records, prints and crashes still reach the "
                "host, once each: what the plugin's own handlers write to stdout and stderr "
                "arrives as the records they format"
            )
        if disabled:
            shown = ", ".join(disabled[:5]) + (
                f" and {len(disabled) - 5} more" if disabled[5:] else ""
            )
            _log.warning(
                "the plugin's logging configuration disabled the logger(s) %s, so their records "
                "reach no handler: dictConfig() and fileConfig() disable every existing logger "
                "their configuration does not name, unless given disable_existing_loggers=False",
                shown,
            )


#: Seconds between the runner's looks at whether its handler is still on the root logger.
FORWARDING_CHECK_INTERVAL = 1.0


def render_consoles() -> None:
    """In ``stdio = "pipe"`` mode, make the console handlers of the plugin's loggers (any
    logger's, a library's own) send what they render as its record, not also as text on the
    pipe (:func:`~isoplug.logs.rendered_records.render_through`): once the plugins' code is
    imported and set up, and then at every look of :func:`watch_forwarding`."""
    render_through(pipe_streams())


def watch_forwarding(loop: asyncio.AbstractEventLoop) -> None:
    """Look every :data:`FORWARDING_CHECK_INTERVAL` seconds, on ``loop``, whether the runner's
    forwarding handler is still on the root logger, and put it back if not. A configuration
    that closes it has it back at once (:class:`KeptForwarding`); plugin code that takes it off
    by hand (``for h in root.handlers[:]: root.removeHandler(h)``, an idiom of scripts older
    than ``basicConfig(force=True)``) does not close it, and its records would reach only the
    plugin's own handlers from then on. The first time, a WARNING says so."""
    handler = kept_forwarder()
    if handler is None:
        return
    told = False

    def look() -> None:
        nonlocal told
        render_consoles()
        if handler not in logging.root.handlers and _LOGGING_LOCK.acquire(blocking=False):
            # Else a configuration is under way in another thread: it restores at its end.
            try:
                missing = handler not in logging.root.handlers
                if missing:
                    _restore(handler)
            finally:
                _LOGGING_LOCK.release()
            if missing and not told:
                told = True
                _log.warning(
                    "the plugin took isoplug's log handler off the root logger; isoplug put it "
                    "back: the records it logged meanwhile (up to %.0f s) went only to the "
                    "handlers it left (with none, Python's last resort passed on its WARNING "
                    "and above). Its handler stays on the root logger beside the plugin's own",
                    FORWARDING_CHECK_INTERVAL,
                )
        loop.call_later(FORWARDING_CHECK_INTERVAL, look)

    loop.call_later(FORWARDING_CHECK_INTERVAL, look)


#: How far above the handler's close() a configuration's frame may be (dictConfig():
#: _clearExistingHandlers, then logging.shutdown(); basicConfig() closes it itself).
_CONFIGURATION_DEPTH = 6


def _closed_by_a_configuration(frame: FrameType | None) -> bool:
    """True if ``frame`` (the caller of the handler's close()) or one of the few above it runs
    ``logging.basicConfig()`` or ``logging.config``'s code."""
    config = sys.modules.get("logging.config")
    config_file = getattr(config, "__file__", None)
    basic_config = logging.basicConfig.__code__
    for _ in range(_CONFIGURATION_DEPTH):
        if frame is None:
            return False
        code = frame.f_code
        if code is basic_config or (config_file is not None and code.co_filename == config_file):
            return True
        frame = frame.f_back
    return False


def _restore(handler: ForwardingHandler) -> list[str]:
    """Put ``handler`` back on the root logger and enable the disabled loggers of isoplug's
    own making; return the names of the other disabled loggers."""
    root = logging.getLogger()
    vars(root).pop("addHandler", None)  # _restore_at_next_root_handler's, if still there
    render_consoles()
    # Appended to the list, as addHandler() does: a record some thread is handing out right
    # now then reaches the handler, which is what its rendering counted on
    # (isoplug.logs.rendered_records).
    root.addHandler(handler)
    others: list[str] = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or not logger.disabled:
            continue
        if name in _ISOPLUG_LOGGERS[:2] or name.startswith(_ISOPLUG_LOGGERS[2:]):
            logger.disabled = False
        else:
            others.append(name)
    return sorted(others)


def _restore_at_next_root_handler(handler: ForwardingHandler) -> None:
    """Restore ``handler`` right after the next handler goes on the root logger: the last
    step of ``basicConfig(force=True)``, which has no function of its own to wrap, and which
    would add none of its handlers if it found this one back before it added them. Once: the
    root's ``addHandler`` is this instance's own until then."""
    root = logging.getLogger()
    if "addHandler" in vars(root):
        return

    def add_then_restore(new: logging.Handler) -> None:
        vars(root).pop("addHandler", None)
        logging.Logger.addHandler(root, new)
        _restore(handler)

    root.addHandler = add_then_restore  # type: ignore[method-assign,assignment]


def _restore_after_configurations(handler: ForwardingHandler) -> None:
    """Make ``logging.config``'s configurations end by restoring ``handler`` and isoplug's
    loggers (see :class:`KeptForwarding`): its functions that disable loggers and set the
    root's handlers, the last steps of ``fileConfig()`` and ``dictConfig()``, are looked up
    when called, so the configuration under way is caught too. Once; where this Python's
    ``logging.config`` has no such functions, the thread alone restores."""
    config = sys.modules.get("logging.config")
    if config is None or getattr(config, "_isoplug_restores", False):
        return
    config._isoplug_restores = True  # type: ignore[attr-defined]
    handle_existing = getattr(config, "_handle_existing_loggers", None)
    configurator = getattr(config, "DictConfigurator", None)
    configure_root = getattr(configurator, "configure_root", None)
    if callable(handle_existing):

        def handle_existing_then_restore(*args: Any, **kwargs: Any) -> Any:
            result = handle_existing(*args, **kwargs)
            _restore(handler)
            return result

        config._handle_existing_loggers = handle_existing_then_restore  # type: ignore[attr-defined]
    if callable(configure_root):

        def configure_root_then_restore(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = configure_root(self, *args, **kwargs)
            _restore(handler)
            return result

        configurator.configure_root = configure_root_then_restore  # type: ignore[union-attr]


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
            logging.getLogger(name or None).setLevel(level)

    def change(self, change: LogLevelChange) -> None:
        """Set a plugin's or a logger's level, as the host asked."""
        if not change.plugin:
            self._named.add(change.logger)
            logging.getLogger(change.logger or None).setLevel(change.level)
            return
        if change.plugin not in self._levels:
            raise ValueError(f"this runner has no plugin {change.plugin!r}")
        self._levels[change.plugin] = change.level
        self.apply()


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
    logging.getLogger("isoplug.runner").warning("unknown log level %r; using INFO", text)
    return logging.INFO
