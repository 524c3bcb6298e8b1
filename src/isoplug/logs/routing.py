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
its connections together) may add at most a :class:`LoggerBudget` of entries to it, its share;
and all of them together, whatever the number of hosts, runners, receivers, reloads and
connections, at most the process's (:func:`set_process_logger_budget`), never given back since
the loggers never leave. Past either, records on a name the host has no logger for yet go to
the prefix's own logger, each one counted (``LogMetrics.over_logger_budget``), and the
replayer says so. Such names are remembered apart from :attr:`LoggerRoutes.names`, so that
every record on them is counted, however many names the sender invents.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

from isoplug.wire.sanitize import clean_logger_name

__all__ = [
    "LoggerBudget",
    "LoggerRoutes",
    "checked_prefix",
    "process_logger_budget",
    "set_process_logger_budget",
]

#: Told of each record put on ``fallback`` (its first argument) because its name would have
#: been a new host logger past a budget: the process's (True) or the sender's share (False).
OverBudget = Callable[[str, bool], None]
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
#: Entries all senders together may add in one process: five runners' full shares, some
#: 30 MiB of loggers at most, and a host's plugins use a few hundred between them.
DEFAULT_PROCESS_LOGGER_BUDGET = 100_000


class LoggerBudget:
    """How many more entries a sender (a runner's connections together) may add to logging's
    registry of loggers; ``within``: a budget each entry is spent from too (by default the
    process's, see :func:`process_logger_budget`; ``None`` for none). Thread-safe."""

    def __init__(
        self,
        entries: int = DEFAULT_LOGGER_BUDGET,
        *,
        within: LoggerBudget | _Process | None = "process",
    ) -> None:
        self.left = entries
        #: Entries spent so far.
        self.spent = 0
        self.within = process_logger_budget() if isinstance(within, str) else within
        self._lock = threading.Lock()

    def spend(self, entries: int) -> LoggerBudget | None:
        """Spend ``entries`` here and in the budget this one is within; None when spent, else
        the budget that has not that many left (then nothing is spent)."""
        # Always this budget's lock first, then its outer one's: no two threads wait on each
        # other's.
        with self._lock:
            if entries > self.left:
                return self
            if self.within is not None:
                short = self.within.spend(entries)
                if short is not None:
                    return short
            self.left -= entries
            self.spent += entries
            return None


_Process = Literal["process"]
#: Spent by every sender in this process, since loggers made for one never leave.
_process_budget = LoggerBudget(DEFAULT_PROCESS_LOGGER_BUDGET, within=None)
#: What :func:`set_process_logger_budget` set (spent or not).
_process_entries = DEFAULT_PROCESS_LOGGER_BUDGET


def process_logger_budget() -> LoggerBudget:
    """The budget every :class:`LoggerBudget` is within unless told otherwise: the entries all
    isoplug's senders in this process (every host's runners, every receiver's senders) may
    still add to logging's registry."""
    return _process_budget


def set_process_logger_budget(entries: int) -> int:
    """Let all of isoplug's senders in this process add ``entries`` registry entries in all
    (what they added so far counts, as their loggers stay); returns the bound it replaces. For
    a process whose plugins legitimately use more logger names than
    :data:`DEFAULT_PROCESS_LOGGER_BUDGET` allows: call it before they log."""
    global _process_entries
    if entries < 0:
        raise ValueError(f"set_process_logger_budget(): entries must be 0 or more, not {entries!r}")
    budget = _process_budget
    with budget._lock:
        previous, _process_entries = _process_entries, entries
        budget.left = max(0, entries - budget.spent)
    return previous


def checked_prefix(prefix: str) -> str:
    """``prefix``, if it is one a receiver can put in front of its senders' logger names:
    ``""`` (the names as they are) or a logger's dotted name (``workers``, ``app.workers``).
    Raises :class:`TypeError` for what is not a string (``None``: write ``""``),
    :class:`ValueError` for an empty part (``"w."`` made ``w..child``), whitespace or a
    control character."""
    if not isinstance(prefix, str):
        raise TypeError(
            f"prefix must be a str, a logger's dotted name ('workers'), or '' for the names as "
            f"the senders give them; got {type(prefix).__name__} {prefix!r:.60}"
        )
    if prefix and (
        "" in prefix.split(".") or not prefix.isprintable() or any(c.isspace() for c in prefix)
    ):
        raise ValueError(
            f"prefix {prefix!r:.80} is not a logger's name: give dot-separated parts, none "
            "empty, without whitespace or control characters ('workers', 'app.workers'), or "
            "'' for the names as the senders give them"
        )
    return prefix


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
        over_budget: OverBudget | None = None,
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
        # Names past a budget -> (what :attr:`names` would hold, the logger their records go
        # on instead, whether the process's budget was the one spent). Kept out of ``names``,
        # whose hits cost a look-up and nothing more: each record on one of these is counted.
        self._over: dict[str, tuple[tuple[logging.Logger, dict[str, Any]], str, bool]] = {}

    def logger_for(self, sender_name: str) -> tuple[logging.Logger, dict[str, Any]]:
        """The host logger for a sender's logger name, and the identity to stamp; for a name
        that :attr:`names` does not have (yet)."""
        over = self._over.get(sender_name)
        if over is not None:
            result, fallback, process_wide = over
            if self._over_budget is not None:
                self._over_budget(fallback, process_wide)
            return result
        for sender_prefix, (host_prefix, overrides) in self._routes:
            if sender_name == sender_prefix or sender_name.startswith(sender_prefix + "."):
                rest = sender_name[len(sender_prefix) + 1 :]
                rest = clean_logger_name(rest, self._max_name_chars)
                return self._placed(
                    sender_name,
                    f"{host_prefix}.{rest}" if rest else host_prefix,
                    host_prefix,
                    _with_stream(rest, {**self._identity, **overrides}),
                )
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
        return self._placed(
            sender_name, name, self.prefix or "root", _with_stream(suffix, self._identity)
        )

    def _placed(
        self, sender_name: str, name: str, fallback: str, identity: dict[str, Any]
    ) -> tuple[logging.Logger, dict[str, Any]]:
        """The logger ``name``, if it exists or the budget allows, else ``fallback``'s; with
        ``identity``, remembered for ``sender_name``."""
        # A read of logging's registry without its lock: a dict look-up is atomic, and a
        # logger made meanwhile at worst costs the budget once more.
        if isinstance(logging.Logger.manager.loggerDict.get(name), logging.Logger) or (
            name == fallback
        ):
            short = None
        else:
            short = self._budget.spend(name.count(".") + 1)
        rememberable = len(sender_name) <= _MAX_REMEMBERED_CHARS
        if short is None:
            result = (logging.getLogger(name), identity)
            if rememberable and len(self.names) < _MAX_NAMES:
                self.names[sender_name] = result
            return result
        result = (logging.getLogger(fallback), identity)
        process_wide = short is not self._budget
        if rememberable and len(self._over) < _MAX_NAMES:
            self._over[sender_name] = (result, fallback, process_wide)
        if self._over_budget is not None:
            self._over_budget(fallback, process_wide)
        return result


def _with_stream(name: str, identity: dict[str, Any]) -> dict[str, Any]:
    """``identity``, plus ``stream`` for a logger named for an output stream (``stdout``,
    ``x.stderr``): what a runner's print()s and writes are logged on. The host stamps it,
    like the rest of the identity, so it costs the plugin nothing to send and no sender can
    give it to another logger's records; metrics count records per stream from it."""
    last = name.rpartition(".")[2]
    return {**identity, "stream": last} if last in _STD_STREAMS else identity
