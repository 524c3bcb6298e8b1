"""Which host logger a sender's logger maps to, and the identity its records are stamped with.

A sender's logger ``x.y`` becomes ``<prefix>.x.y`` (its root logger, ``<prefix>`` itself), with
any of ``strip_prefixes`` taken off first, so that a sender can never log as a logger outside
its prefix. A route maps a sender prefix to a host prefix of its own, with identity overrides:
how a runner that hosts several plugins gets each plugin's records under that plugin's name.
Names are cleaned and capped (:func:`~isoplug.wire.sanitize.clean_logger_name`). A logger named
for an output stream (``stdout``, ``x.stderr``) gets ``stream`` in its identity.

Answers are remembered in :attr:`LoggerRoutes.names` (bounded, and only for names of sensible
length), which the replayer reads first for every record: that spares it logging's module lock
in ``getLogger()``.

Every host logger made for a sender stays in ``logging``'s registry for the life of the
process, with a placeholder for each dotted parent. So a sender inventing names (a runner: all
its connections together) may add at most a :class:`LoggerBudget` of entries to it; past that,
records on a name the host has no logger for yet go to the prefix's own logger, and the
replayer says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.wire.sanitize import clean_logger_name

__all__ = ["LoggerBudget", "LoggerRoutes"]

#: The output streams counted in ``LogMetrics.streams``.
_STD_STREAMS = frozenset({"stdout", "stderr"})
#: The sender's root logger has one of these names.
_ROOT_NAMES = frozenset({"", "root"})
#: At most this many names are remembered: a sender inventing names must not grow the cache.
_MAX_NAMES = 10_000
#: Names longer than this (before cleaning) are looked up afresh each time, not remembered.
_MAX_REMEMBERED_CHARS = 1024
#: Entries (loggers and their dotted parents) one sender, or one runner, may add to logging's
#: registry: a few megabytes, far more than any plugin's own loggers need.
DEFAULT_LOGGER_BUDGET = 20_000


class LoggerBudget:
    """How many more entries a sender (a runner's connections together) may add to logging's
    registry of loggers. Thread-safe."""

    def __init__(self, entries: int = DEFAULT_LOGGER_BUDGET) -> None:
        self.left = entries
        self._lock = threading.Lock()

    def take(self, entries: int) -> bool:
        """Spend ``entries``; False (nothing spent) when that many are not left."""
        with self._lock:
            if entries > self.left:
                return False
            self.left -= entries
            return True


class LoggerRoutes:
    """Maps one sender's logger names to host loggers and identities; see the module docstring.

    ``identity`` is the replayer's own dict (read at each new name), ``max_name_chars`` the
    longest logger name kept after the prefix."""

    def __init__(
        self,
        prefix: str,
        identity: dict[str, Any],
        *,
        strip_prefixes: tuple[str, ...] = (),
        routes: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
        max_name_chars: int,
        budget: LoggerBudget | None = None,
        over_budget: Callable[[str], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self._budget = budget or LoggerBudget()
        self._over_budget = over_budget
        self._identity = identity
        self._max_name_chars = max_name_chars
        self._strip = tuple(sorted((p for p in strip_prefixes if p), key=len, reverse=True))
        # Sender logger prefix -> (host logger prefix, identity overrides), longest first.
        self._routes = sorted((routes or {}).items(), key=lambda item: len(item[0]), reverse=True)
        #: Sender logger name -> (host logger, identity to stamp), for the names seen so far.
        self.names: dict[str, tuple[logging.Logger, dict[str, Any]]] = {}

    def logger_for(self, sender_name: str) -> tuple[logging.Logger, dict[str, Any]]:
        """The host logger for a sender's logger name, and the identity to stamp; for a name
        that :attr:`names` does not have yet."""
        for sender_prefix, (host_prefix, overrides) in self._routes:
            if sender_name == sender_prefix or sender_name.startswith(sender_prefix + "."):
                rest = sender_name[len(sender_prefix) + 1 :]
                rest = clean_logger_name(rest, self._max_name_chars)
                routed = (
                    self._logger(f"{host_prefix}.{rest}" if rest else host_prefix, host_prefix),
                    _with_stream(rest, {**self._identity, **overrides}),
                )
                self._remember(sender_name, routed)
                return routed
        suffix = sender_name
        for strip in self._strip:
            if suffix == strip:
                suffix = ""
                break
            if suffix.startswith(strip + "."):
                suffix = suffix[len(strip) + 1 :]
                break
        suffix = "" if suffix in _ROOT_NAMES else clean_logger_name(suffix, self._max_name_chars)
        if not self.prefix:
            name = suffix or "root"
        else:
            name = f"{self.prefix}.{suffix}" if suffix else self.prefix
        result = (self._logger(name, self.prefix or "root"), _with_stream(suffix, self._identity))
        self._remember(sender_name, result)
        return result

    def _logger(self, name: str, fallback: str) -> logging.Logger:
        """The logger ``name``, if it exists or the budget allows; else ``fallback``'s."""
        # A read of logging's registry without its lock: a dict look-up is atomic, and a
        # logger made meanwhile at worst costs the budget once more.
        if isinstance(logging.Logger.manager.loggerDict.get(name), logging.Logger) or (
            name == fallback or self._budget.take(name.count(".") + 1)
        ):
            return logging.getLogger(name)
        if self._over_budget is not None:
            self._over_budget(fallback)
        return logging.getLogger(fallback)

    def _remember(self, sender_name: str, result: tuple[logging.Logger, dict[str, Any]]) -> None:
        if len(self.names) < _MAX_NAMES and len(sender_name) <= _MAX_REMEMBERED_CHARS:
            self.names[sender_name] = result


def _with_stream(name: str, identity: dict[str, Any]) -> dict[str, Any]:
    """``identity``, plus ``stream`` for a logger named for an output stream (``stdout``,
    ``x.stderr``): what a runner's print()s and writes are logged on. The host stamps it,
    like the rest of the identity, so it costs the plugin nothing to send and no sender can
    give it to another logger's records; metrics count records per stream from it."""
    last = name.rpartition(".")[2]
    return {**identity, "stream": last} if last in _STD_STREAMS else identity
