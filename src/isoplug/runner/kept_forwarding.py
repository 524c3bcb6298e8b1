"""The runner's forwarding handler kept working whatever the plugin does to ``logging``.

A plugin's logging configuration (``basicConfig(force=True)``, ``dictConfig()``,
``fileConfig()``) closes every handler it replaces, ``logging.shutdown()`` closes every handler
there is, and plugin code may take handlers off the root logger by hand: isoplug's forwarding
handler stays open and goes back on the root logger (:class:`KeptForwarding`,
:func:`watch_forwarding`), and each time a record says what happened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from types import FrameType
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs import ForwardingHandler
from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.logs.loguru_bridge import Unbridged, restore_bridge_sink
from isoplug.logs.loguru_sinks import complete_enqueued_sinks
from isoplug.logs.pipe_consoles import render_through
from isoplug.logs.redirect import pipe_streams
from isoplug.logs.sources import current_source
from isoplug.runner.group_logging import group_guard
from isoplug.runner.health import describe_frame

__all__ = [
    "FORWARDING_CHECK_INTERVAL",
    "LOGGING_LOCK",
    "KeptForwarding",
    "finish_reports",
    "keep_loguru_forwarded",
    "render_consoles",
    "settle_loguru_at_exit",
    "stop_watching_forwarding",
    "watch_forwarding",
]

_log = guarded_logger("isoplug.runner")
#: The lock logging's own functions hold while they change handlers or a configuration
#: (``logging._lock``, 3.11 to 3.13; a Python without it gets a lock of its own, which only
#: isoplug's restores then share).
LOGGING_LOCK: Any = getattr(logging, "_lock", None) or threading.RLock()

#: The loggers of isoplug's own making in a runner, which a plugin's logging configuration
#: may disable in passing and KeptForwarding enables again, by name: the print() streams'
#: (``stdout``, ``stderr``), the warnings' (``py.warnings``, which isoplug's capture logs
#: on), isoplug's own (``isoplug``, the parent of its loggers)...
_ISOPLUG_LOGGER_NAMES = frozenset({"stdout", "stderr", "py.warnings", "isoplug"})
#: ... and by prefix: ``plugin.<id>.stdout``, ``ctx.logger`` and its children, isoplug's.
_ISOPLUG_LOGGER_PREFIXES = ("plugin.", "isoplug.")


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
    logging's lock is free, and restores whatever those missed.

    Any other close by the plugin's code in the runner's process (``logging.shutdown()``
    called by a ``main()`` it reuses, a handler closed by hand) leaves the handler open too:
    it stays on the root logger, and one INFO record says where it was closed. In a program
    of its own, such a call does little harm (stream handlers keep writing, file handlers open
    their file again); here it left every later record, print and crash to the handler's
    stderr fallback, WARNING text without level, logger or extras, for the runner's whole
    life, and nothing said why. The runner's own end lets it close
    (:func:`~isoplug.logs.kept_forwarder.let_forwarding_close`), and so does the process's
    exit; so does a process the plugin forked (``logging.shutdown()`` before ``os._exit()``,
    as a forked child ends).
    """

    def __init__(self, handler: ForwardingHandler) -> None:
        self._handler = handler
        self._restoring = threading.Lock()
        self._told = False
        self._told_closed = False
        self._pid = os.getpid()

    def closed(self) -> bool:
        """Called by the handler's close(): True (it stays open) when a configuration closes
        it, maybe holding logging's lock (the thread waits for it: it restores after the
        configuration's last change), or other plugin code in the runner's process; False
        (it closes) in a process the plugin forked."""
        closer = sys._getframe(2)
        if not _closed_by_a_configuration(closer):
            if os.getpid() != self._pid:
                return False
            self._tell_closed(closer)
            return True
        _restore_after_configurations(self._handler)
        _restore_at_next_root_handler(self._handler)
        if self._restoring.acquire(blocking=False):  # else one is on its way already
            # Its word is about the configuring code's doing: in a group, a member's.
            thread = threading.Thread(
                target=self._restore_and_report,
                args=(current_source.get(),),
                name="isoplug-log-restore",
                daemon=True,
            )
            _reports.append(thread)
            thread.start()
        return True

    def _tell_closed(self, closer: FrameType) -> None:
        if self._told_closed:
            return
        self._told_closed = True
        how = (
            "called logging.shutdown(), which closes every handler,"
            if closer.f_code is logging.shutdown.__code__
            else "closed isoplug's log handler"
        )
        # Said from the closing thread, which may hold the handler's lock (logging.shutdown()
        # does): the forwarding handler takes none of its own.
        _log.info(
            "the plugin's code %s at %s; isoplug kept its own handler open until the "
            "runner's end, so records, prints and crashes still reach the host as records",
            how,
            describe_frame(closer) or "an unknown place",
        )

    def _restore_and_report(self, source: str | None) -> None:
        current_source.set(source)
        try:
            # Taken as a configuration takes it, to its end: this waits for that end.
            with LOGGING_LOCK:
                _restore(self._handler)
                disabled = _take_disabled_report()
        finally:
            self._restoring.release()
        if (guard := group_guard()) is not None:
            guard.say_notices()
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


#: The threads restoring the handler and saying so (:meth:`KeptForwarding.closed`).
_reports: list[threading.Thread] = []


def finish_reports(timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the restores under way to say what they did: at the
    runner's end, before its handler closes for good (their records would go to its stderr
    fallback then, as text)."""
    deadline = time.monotonic() + timeout
    while _reports:
        _reports.pop().join(max(0.0, deadline - time.monotonic()))


#: Seconds between the runner's looks at whether its handler is still on the root logger.
FORWARDING_CHECK_INTERVAL = 1.0


def render_consoles() -> None:
    """In ``stdio = "pipe"`` mode, make the console handlers of the plugin's loggers (any
    logger's, a library's own) send what they render as its record, not also as text on the
    pipe (:func:`~isoplug.logs.pipe_consoles.render_through`): once the plugins' code is
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
        if (guard := group_guard()) is not None:
            # An assignment to root.level, which no setLevel() saw; and the word on what the
            # guard undid in a member's method since the last look.
            guard.hold_root_level(None, window=FORWARDING_CHECK_INTERVAL)
            guard.say_notices()
        if handler not in logging.root.handlers and LOGGING_LOCK.acquire(blocking=False):
            # Else a configuration is under way in another thread: it restores at its end.
            try:
                missing = handler not in logging.root.handlers
                if missing:
                    meanwhile = _where_records_went()
                    _restore(handler)
            finally:
                LOGGING_LOCK.release()
            if missing and not told:
                told = True
                _log.warning(
                    "the plugin took isoplug's log handler off the root logger; isoplug put it "
                    "back. Meanwhile (up to %.0f s) the records of its logging calls %s; its "
                    "prints, stderr writes, warnings and uncaught exceptions arrived as always. "
                    "Its handler stays on the root logger beside the plugin's own",
                    FORWARDING_CHECK_INTERVAL,
                    meanwhile,
                )
        keep_loguru_forwarded()
        _next_look[:] = [loop.call_later(FORWARDING_CHECK_INTERVAL, look)]

    _next_look[:] = [loop.call_later(FORWARDING_CHECK_INTERVAL, look)]


#: The next look of :func:`watch_forwarding`, while it watches.
_next_look: list[asyncio.TimerHandle] = []


def stop_watching_forwarding() -> None:
    """End :func:`watch_forwarding`'s looks: before the exit hooks, which take sinks and
    handlers off on purpose (loguru's own hook removes every sink), and whose end closes the
    forwarding handler; a look meanwhile put loguru's sink back, and said so after
    forwarding had ended."""
    while _next_look:
        _next_look.pop().cancel()


#: Whether the runner said it put isoplug's loguru sink back (once: a plugin that removes
#: every sink in a loop would say it each second).
_told_loguru: list[bool] = []


def keep_loguru_forwarded() -> None:
    """Put isoplug's loguru sink back if the plugin removed it and its own sinks send its
    messages nowhere the host reads (``logger.remove(); logger.add("app.log")``), or it left
    none (``logger.remove()``), as the root's handler is (:func:`watch_forwarding`): from then
    on its messages go to its sinks and to the host, as its ``logging`` records do. The first
    time, a WARNING says so and how many messages the host missed meanwhile."""
    missed = restore_bridge_sink()
    if missed is None or _told_loguru:
        return
    _told_loguru.append(True)
    _log.warning(
        "the plugin removed isoplug's loguru sink (logger.remove()) and %s; isoplug added it "
        "back, so its loguru messages reach the host as records again%s. Meanwhile %s",
        "its own sinks write nowhere the host reads"
        if missed.had_own_sinks
        else "left no sink of its own",
        ", beside the plugin's sinks" if missed.had_own_sinks else "",
        _loguru_meanwhile(missed),
    )


def settle_loguru_at_exit() -> None:
    """After the plugins' ``atexit`` hooks, before isoplug's own close the forwarding handler:
    what their loguru sinks still queue is written (a record). No look at the sinks then:
    loguru's own hook (``logger.remove()``, one of the plugins' when a plugin imported loguru)
    has removed them all, isoplug's too, at every exit."""
    complete_enqueued_sinks()


def _loguru_meanwhile(missed: Unbridged) -> str:
    said = []
    if missed.only_to_own_sinks:
        said.append(
            f"{missed.only_to_own_sinks} loguru message(s) went only to the plugin's sinks, "
            "not to the host"
        )
    if missed.to_no_sink is None:
        said.append(
            "the loguru messages that reached no sink at all (if any) are lost and cannot be "
            "counted"
        )
    elif missed.to_no_sink:
        said.append(f"{missed.to_no_sink} loguru message(s) reached no sink at all and are lost")
    return "; ".join(said) if said else "no loguru message was lost"


def _where_records_went() -> str:
    """What became of the plugin's logging calls while isoplug's handler was off the root
    logger, as the handlers it left there (now) say."""
    if logging.root.handlers:
        return (
            "went only to the handlers it left on the root logger (what those wrote to stdout "
            "or stderr arrived as the records they wrote)"
        )
    last_resort = logging.lastResort
    if last_resort is None:
        return (
            "reached no handler and are lost: it left none on the root logger, and "
            "logging.lastResort is None"
        )
    return (
        "reached no handler but Python's last resort: those at "
        f"{logging.getLevelName(last_resort.level)} and above arrived, the others are lost"
    )


#: How far above the handler's close() a configuration's frame may be (dictConfig():
#: _clearExistingHandlers, then logging.shutdown(); basicConfig() closes it itself).
_CONFIGURATION_DEPTH = 6


def _closed_by_a_configuration(frame: FrameType | None) -> bool:
    """True if ``frame`` (the caller of the handler's close()) or one of the few above it runs
    ``logging.basicConfig()`` or ``logging.config``'s code."""
    config = sys.modules.get("logging.config")
    config_file = getattr(config, "__file__", None)
    # Python's, and the runner's that wraps it (isoplug.runner.basic_config).
    basic_configs = {
        logging.basicConfig.__code__,
        getattr(logging.basicConfig, "__wrapped__", logging.basicConfig).__code__,
    }
    for _ in range(_CONFIGURATION_DEPTH):
        if frame is None:
            return False
        code = frame.f_code
        if code in basic_configs or (config_file is not None and code.co_filename == config_file):
            return True
        frame = frame.f_back
    return False


def _restore(handler: ForwardingHandler) -> None:
    """Put ``handler`` back on the root logger and enable the disabled loggers of isoplug's
    own making."""
    root = logging.getLogger()
    vars(root).pop("addHandler", None)  # _restore_at_next_root_handler's, if still there
    render_consoles()
    # Appended to the list, as addHandler() does: a record some thread is handing out right
    # now then reaches the handler, which is what its rendering counted on
    # (isoplug.logs.rendered_records).
    root.addHandler(handler)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.disabled and _isoplugs(name):
            logger.disabled = False


def _take_disabled_report() -> list[str]:
    """The loggers the plugin's configurations disabled since the last report, still disabled:
    only those, as a logger the plugin disabled before (its own choice, maybe by an earlier
    configuration, already said) is not the latest configuration's doing."""
    reported = sorted(name for name in _disabled_by_configurations if _is_disabled(name))
    _disabled_by_configurations.clear()
    return reported


#: The loggers (none of isoplug's) that the plugin's configurations disabled since the last
#: report (:func:`_settle_disabled`), for :meth:`KeptForwarding._restore_and_report` to name.
_disabled_by_configurations: set[str] = set()


def _isoplugs(name: str) -> bool:
    return name in _ISOPLUG_LOGGER_NAMES or name.startswith(_ISOPLUG_LOGGER_PREFIXES)


def _is_disabled(name: str) -> bool:
    logger = logging.root.manager.loggerDict.get(name)
    return isinstance(logger, logging.Logger) and logger.disabled


def _disabled_loggers() -> set[str]:
    """The names of the disabled loggers, none of isoplug's."""
    return {
        name
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.disabled and not _isoplugs(name)
    }


def _settle_disabled(before: set[str]) -> None:
    """After a configuration's step that disables loggers (``before``: those disabled when it
    began): note the loggers it newly disabled, for the report; in a group, have the guard
    undo what it did to the other members' loggers. Called in the configuring thread, under
    its source, before the plugin's next line runs."""
    now = _disabled_loggers()
    newly = sorted(now - before)
    if (guard := group_guard()) is not None:
        configurer = current_source.get()
        newly = guard.enable_others(newly, configurer)
        # disable_existing_loggers=False enables every existing logger, another member's too.
        guard.keep_disabled(sorted(before - now), configurer)
    _disabled_by_configurations.update(newly)


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
            before = _disabled_loggers()
            result = handle_existing(*args, **kwargs)
            _settle_disabled(before)
            _restore(handler)
            return result

        config._handle_existing_loggers = handle_existing_then_restore  # type: ignore[attr-defined]
    if callable(configure_root):

        def configure_root_then_restore(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = configure_root(self, *args, **kwargs)
            _restore(handler)
            return result

        configurator.configure_root = configure_root_then_restore  # type: ignore[union-attr]
