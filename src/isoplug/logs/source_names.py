"""Records named for the code that logged them, in a process that runs several sources' code.

A runner of one plugin needs nothing of this: the host puts every record of its connection
under that plugin (``x`` becomes ``plugin.<id>.x``). A runner of a group cannot be told apart
that way, so the host routes each record by its logger's name: ``plugin.<member>...`` to that
member, anything else to the group (:mod:`isoplug.host.logbridge`). A plugin's printed lines,
warnings and uncaught exceptions are named for it where they are made
(:data:`~isoplug.logs.sources.current_source`); its ``logging.getLogger(__name__)`` records
are not, as the plugin names those itself.

:class:`SourceNamingHandler` names them as it forwards them: a record handled while
:data:`~isoplug.logs.sources.current_source` is ``plugin.a`` (a's call, its event handler, a
task or ``to_thread`` it started, its setup and teardown) goes out as ``plugin.a.<logger>``
(the root logger's as ``plugin.a``), which the host turns into exactly what a runner of ``a``
alone would have sent. Names already under one of the process's sources are left as they
are: they were named for their source where they were made (a printed line flushed later, an
exception hook's record), or by the plugin on purpose (``ctx.logger``). With no current
source (a bare ``threading.Thread``), the record keeps its name and the host credits the
group.

A structlog event dict (the record's ``msg``) that names the record's logger (structlog's
``add_logger_name``) is given the new name too, in a copy, so that the receiver takes it for
the logger's own name (as from a runner of one plugin), not for a claim to another.

The new name is what goes over the wire only: the record's other handlers, before or after
this one, see the name the plugin's code logged on. The host trusts none of it: it routes
only to members of the runner, so a name never makes a record another runner's, or the
host's.

Only group runners install this handler: a single plugin's runner keeps the plain
:class:`~isoplug.logs.ForwardingHandler`, whose per-record path stays as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from isoplug.logs.handler import ForwardingHandler
from isoplug.logs.sources import current_source
from isoplug.logs.templates import EVENT_TYPES

__all__ = ["SourceNamingHandler"]

_current_source = current_source.get
_forward = ForwardingHandler.handle

#: New names remembered per source; past it they are computed per record (a plugin inventing
#: logger names must not grow this process's memory).
_MAX_REMEMBERED = 4096
#: The keys of a structlog event dict that name its logger (``add_logger_name``'s and the like).
_LOGGER_KEYS = ("logger", "logger_name")
#: The event of a record whose message is none (read, never written).
_NO_EVENT: dict[str, Any] = {}


class SourceNamingHandler(ForwardingHandler):
    """A :class:`~isoplug.logs.ForwardingHandler` that names each record for the source whose
    code logged it (see the module docstring). ``sources`` are the logger prefixes of this
    process's sources (``plugin.<id>`` for each member of a group)."""

    def __init__(self, *args: Any, sources: Iterable[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sources = frozenset(sources)
        #: Per source: logger name -> the name it goes out as (None: unchanged).
        self._names: dict[str, dict[str, str | None]] = {}

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:  # type: ignore[override]
        # Module-level functions, not super(): this runs for every record of a group runner.
        source = _current_source()
        if source is None:
            return _forward(self, record)
        name = record.name
        try:
            renamed = self._names[source][name]
        except KeyError:
            renamed = self._learn(source, name)
        if renamed is None:
            return _forward(self, record)
        # Renamed for this handler alone: the record is encoded before handle() returns.
        record.name = renamed
        msg = record.msg
        event = cast("dict[str, Any]", msg) if type(msg) in EVENT_TYPES else _NO_EVENT
        if event.get("logger") == name or event.get("logger_name") == name:
            # A structlog event that names its logger (add_logger_name) names it as the
            # record does, so the receiver sees the logger's own name, not a claim to another.
            record.msg = {
                **event,
                **{key: renamed for key in _LOGGER_KEYS if event.get(key) == name},
            }
            try:
                return _forward(self, record)
            finally:
                record.name = name
                record.msg = msg
        try:
            return _forward(self, record)
        finally:
            record.name = name

    def _learn(self, source: str, name: str) -> str | None:
        """:meth:`_renamed`, remembered (up to :data:`_MAX_REMEMBERED` names per source)."""
        names = self._names.setdefault(source, {})
        renamed = self._renamed(source, name)
        if len(names) < _MAX_REMEMBERED:
            names[name] = renamed
        return renamed

    def _renamed(self, source: str, name: str) -> str | None:
        """The name a record of logger ``name`` goes out as while ``source`` runs; None when
        it keeps its own."""
        sources = self._sources
        if name in sources:
            return None
        dot = name.find(".")
        while dot > 0:
            if name[:dot] in sources:
                return None
            dot = name.find(".", dot + 1)
        if name == "root":
            return source
        return f"{source}.{name}"
