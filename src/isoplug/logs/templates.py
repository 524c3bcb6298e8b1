"""The ``msg`` of a replayed record that is not plain text: :class:`LogTemplate`, :class:`LogEvent`.

A :class:`LogTemplate` is the template's text as a ``str`` that ``%`` formats into the message
the sender rendered: tools that group records by ``msg`` see one template, while
``getMessage()`` returns exactly what the sender printed. The replayer
(:mod:`isoplug.logs.replay`) makes one object per template and shares it between records.

A :class:`LogEvent` is a dict message (a structlog event, or a dict a plugin logged) with the
host's truth stated in it, for the tools that read its keys as the record's fields; its
``str()`` is the message the sender rendered, so ``getMessage()`` and every ``%(message)s``
show what the plugin printed, not the host's stamps.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVENT_TYPES", "LogEvent", "LogTemplate"]


class LogTemplate(str):
    """The ``msg`` of a replayed record whose sender logged a format string with arguments:
    the template itself, so that tools which group records by ``msg`` (Sentry) see one
    template; the record's ``args`` is ``(the message the sender rendered,)``.

    ``LogRecord.getMessage()`` does ``str(msg) % args``: ``__str__`` keeps this object, and
    ``%`` with a one-string tuple returns that string. The template is never applied to the
    sender's text, so one that does not match its message (a buggy or hostile sender) cannot
    make formatting fail; a filter that rewrites ``args[0]`` (redaction) changes the message.
    Anything else sees an ordinary string: comparisons, hashing, ``json``, string methods use
    the template's text. One object serves every record of a template.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return self

    def __mod__(self, args: object) -> str:
        if type(args) is tuple and len(args) == 1 and isinstance(args[0], str):
            return args[0]
        # Arguments someone else put on the record: formatted as any record's would be.
        return str.__mod__(self, args)

    def __reduce__(self) -> tuple[Any, ...]:
        # Not str's default (protocols 0 and 1 would recurse through __str__).
        return (LogTemplate, (str.__str__(self),))


class LogEvent(dict[str, Any]):
    """The ``msg`` of a replayed record whose sender logged a dict: the dict, with the host's
    truth stated in it (:mod:`isoplug.logs.event_truth`), for structlog's ``ProcessorFormatter``
    and python-json-logger, which read its keys as the record's fields.

    ``LogRecord.getMessage()`` does ``str(msg)``: that is the message the sender rendered
    (``{'a': 1}``), not the stamped dict's text, so a stdlib formatter prints what the plugin
    would have printed in-process. ``copy()`` gives a plain dict, as structlog expects.
    """

    __slots__ = ("rendered",)

    def __init__(self, values: dict[str, Any], rendered: str) -> None:
        super().__init__(values)
        self.rendered = rendered

    def __str__(self) -> str:
        return self.rendered

    def __reduce__(self) -> tuple[Any, ...]:
        return (LogEvent, (dict(self), self.rendered))


#: The types of a record's ``msg`` that is an event dict: a plugin's own ``dict``, and a replayed
#: record's :class:`LogEvent` (a host that is itself a plugin forwards it on as one). Exact
#: types, as ``type(msg) in EVENT_TYPES``: the check runs for every record sent.
EVENT_TYPES = (dict, LogEvent)
