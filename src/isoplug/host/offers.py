"""What the plugins of one runner offer (methods, event subscriptions): checked, indexed, quoted.

A runner's ready report says, per plugin, which methods it serves and which events it
subscribes to. Those names are the runner's text, so the host

- checks them (:func:`checked_summaries`): a plugin declaring more names, or longer ones,
  than :class:`~isoplug.control.PluginSummary` allows is refused as a plugin that cannot be
  loaded, its error naming it and what it declared; its runner's other plugins are served;
- indexes them (:class:`Offers`): a call checks its method, and a publish its event, with a
  set lookup, however many names the plugins declare;
- quotes them sanitized and few (:meth:`Offers.method_not_found`): a method name is never
  printed raw, and an unknown method's error lists at most :data:`MAX_LISTED_METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from isoplug.control import (
    MAX_OFFERED_NAME_CHARS,
    MAX_OFFERED_NAMES,
    LoadFailure,
    LoadStage,
    PluginSummary,
)
from isoplug.errors import MethodNotFound
from isoplug.wire.sanitize import clean_text

__all__ = ["MAX_LISTED_METHODS", "Offers", "checked_summaries"]

#: How many of a plugin's methods an unknown method's error lists (the rest are counted).
MAX_LISTED_METHODS: Final = 20
#: Cap for a validation error's text quoted in a refusal (the explanation above it is ours).
_MAX_ERROR_CHARS = 300
_NOTHING = PluginSummary()


def checked_summaries(
    loaded: Mapping[str, Any],
) -> tuple[dict[str, PluginSummary], list[LoadFailure]]:
    """The summaries of ``loaded`` (plugin id -> the runner's undecoded summary) that fit the
    limits, and a load failure for each plugin whose summary does not."""
    summaries: dict[str, PluginSummary] = {}
    refused: list[LoadFailure] = []
    for plugin_id, raw in loaded.items():
        try:
            summaries[plugin_id] = msgspec.convert(raw, PluginSummary)
        except msgspec.ValidationError as exc:
            refused.append(LoadFailure(plugin_id, LoadStage.IMPORT, _refusal(plugin_id, raw, exc)))
    return summaries, refused


def _refusal(plugin_id: str, raw: Any, error: msgspec.ValidationError) -> str:
    """Why the summary ``raw`` of ``plugin_id`` is refused, in the plugin author's terms."""
    problems: list[str] = []
    if isinstance(raw, Mapping):
        for field, kind in (("methods", "a method"), ("events", "an event")):
            names = raw.get(field)
            if not isinstance(names, list | tuple):
                continue
            if len(names) > MAX_OFFERED_NAMES:
                problems.append(f"{len(names):,} {field} (at most {MAX_OFFERED_NAMES:,})")
            longest = max((len(n) for n in names if isinstance(n, str)), default=0)
            if longest > MAX_OFFERED_NAME_CHARS:
                problems.append(
                    f"{kind} name of {longest:,} characters (at most {MAX_OFFERED_NAME_CHARS})"
                )
    detail = "; ".join(problems) or clean_text(str(error), _MAX_ERROR_CHARS)
    return (
        f"plugin {clean_text(plugin_id, MAX_OFFERED_NAME_CHARS)!r} declares more than the host "
        f"accepts: {detail}. A plugin may declare at most {MAX_OFFERED_NAMES:,} methods and "
        f"{MAX_OFFERED_NAMES:,} event subscriptions, each name at most "
        f"{MAX_OFFERED_NAME_CHARS} characters long"
    )


class Offers:
    """The checked summaries of one runner's plugins (plugin id -> summary), indexed."""

    __slots__ = ("_events", "_methods", "summaries")

    def __init__(self, summaries: Mapping[str, PluginSummary] | None = None) -> None:
        self.summaries: dict[str, PluginSummary] = dict(summaries or {})
        self._methods = {pid: frozenset(s.methods) for pid, s in self.summaries.items()}
        subscribers: dict[str, list[str]] = {}
        for plugin_id, summary in self.summaries.items():
            for event in summary.events:
                subscribers.setdefault(event, []).append(plugin_id)
        self._events = {event: tuple(ids) for event, ids in subscribers.items()}

    def __bool__(self) -> bool:
        return bool(self.summaries)

    def summary(self, plugin_id: str) -> PluginSummary:
        return self.summaries.get(plugin_id, _NOTHING)

    def has_method(self, plugin_id: str, method: str) -> bool:
        methods = self._methods.get(plugin_id)
        return methods is not None and method in methods

    def subscribers(self, event: str) -> tuple[str, ...]:
        """The plugins of the runner that subscribe to ``event`` (none: empty)."""
        return self._events.get(event, ())

    def method_not_found(self, plugin_id: str, method: str) -> MethodNotFound:
        """The error for a call of ``method``, which ``plugin_id`` does not offer: the plugin's
        method names sanitized, the first :data:`MAX_LISTED_METHODS` listed, the rest counted."""
        summary = self.summary(plugin_id)
        methods = summary.methods
        listed = ", ".join(
            clean_text(name, MAX_OFFERED_NAME_CHARS) for name in methods[:MAX_LISTED_METHODS]
        )
        if len(methods) > MAX_LISTED_METHODS:
            listed += f" and {len(methods) - MAX_LISTED_METHODS:,} more"
        unmarked = (
            " (its class defines it, but without @isoplug.method: only marked methods can be "
            "called)"
            if method in summary.unmarked
            else ""
        )
        error = MethodNotFound(
            f"{plugin_id}.{method}",
            "isoplug.errors.MethodNotFound",
            f"plugin {plugin_id!r} has no method {method!r}{unmarked}; available methods: "
            f"{listed or 'none'}",
        )
        error.asked = False  # the runner is not asked: its text must not say it failed there
        return error
