"""Which extras of a record may not keep their name in OpenTelemetry (:mod:`isoplug.otel.records`
renames them ``extra_<name>``).

The rule, in one sentence: an extra is renamed when its key, or any key path inside a dict
extra (through lists too: a list of maps flattens as the maps do), read as words (case
ignored, invisible characters dropped, Cyrillic and Greek lookalikes read as the Latin letters
they look like, any other character a separator) names a reserved attribute, or has two words
or more and starts with a reserved namespace.

- **Reserved attributes**: what isoplug writes on a record (``code.file.path``...), and every
  attribute of the resource (the application's ``service.name``, ``isoplug.plugin.id``...).
- **Reserved namespaces**: :data:`NAMESPACES` (``isoplug``, the OpenTelemetry namespaces the
  exporter's records and resources use, and those resource detectors fill), plus the first
  word of every resource attribute of two words or more.

Why words: backends rewrite names. Loki and Prometheus turn ``.`` into ``_``
(``service_name``), some lowercase tag keys, and the Elasticsearch and Datadog mappings flatten
a nested map into dotted paths (``{"isoplug": {"plugin": {"id": ...}}}`` becomes
``isoplug.plugin.id``). A name a person reads as a reserved one (``Service.Name``, a zero-width
space or a Cyrillic ``\u0456`` inside it) must not pass either.

Ordinary extras keep their names: ``user_id``, ``request``, ``order.total``, and a one-word
``code``, ``host`` or ``service`` (``extra={"code": 404}``: no backend reads one word as a
namespaced attribute). ``code={"status": 404}`` or ``log_level`` is renamed: read as words, it
is ``code.status``, ``log.level``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from isoplug.otel.protobuf import MAX_DEPTH, _text_of
from isoplug.wire.name_words import words

__all__ = ["NAMESPACES", "ReservedNames", "words"]

#: Namespaces no extra of two words or more may start with: isoplug's own; the record
#: attributes the exporter writes (``code``, ``thread``, ``log``, ``exception``); and the
#: resource's (``service``, ``telemetry`` from the SDK, ``process``, ``host``, ``os``,
#: ``container``, ``k8s``, ``cloud``, ``deployment`` from resource detectors and
#: ``OTEL_RESOURCE_ATTRIBUTES``); and ``otel``, which the specification keeps for itself
#: (``otel.scope.name``, which some backends read as the record's scope).
NAMESPACES = frozenset(
    {
        "isoplug",
        "code",
        "thread",
        "log",
        "exception",
        "service",
        "telemetry",
        "process",
        "host",
        "os",
        "container",
        "k8s",
        "cloud",
        "deployment",
        "otel",
    }
)

#: Values that are not maps, told apart without an ``isinstance`` against an ABC.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes, list, tuple})
#: Verdicts on keys seen (bounded: cleared when full); a record's names repeat.
_MAX_CACHED = 4096


class ReservedNames:
    """The rule of the module docstring, for one exporter's resource."""

    def __init__(self, names: Iterable[str]) -> None:
        self._exact = frozenset(words(name) for name in names)
        self._namespaces = NAMESPACES | {w[0] for w in self._exact if len(w) > 1}
        self._verdicts: dict[str, bool] = {}
        #: Words of the keys seen in nested maps (bounded: cleared when full).
        self._words: dict[str, tuple[str, ...]] = {}

    def reserved(self, key: str, value: Any) -> bool:
        """Whether the extra ``key`` (holding ``value``) must be renamed."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._reserved(words(key))
            if len(self._verdicts) >= _MAX_CACHED:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        kind = type(value)
        if verdict:
            return True
        if kind is list or kind is tuple:
            return self._in_items(self._words_of(key), value, 0)
        if kind in _SCALARS or not isinstance(value, Mapping):
            return False
        return self._nested(self._words_of(key), value, 0)

    def _words_of(self, key: str) -> tuple[str, ...]:
        found = self._words.get(key)
        if found is None:
            found = words(key)
            if len(self._words) >= _MAX_CACHED:
                self._words.clear()
            self._words[key] = found
        return found

    def _reserved(self, path: tuple[str, ...]) -> bool:
        return path in self._exact or (len(path) > 1 and path[0] in self._namespaces)

    def _nested(self, path: tuple[str, ...], value: Mapping[Any, Any], depth: int) -> bool:
        if depth > MAX_DEPTH:
            # Deeper than the exporter writes maps (it sends such a value as text).
            return False
        known = self._words
        for key, item in value.items():
            text = key if type(key) is str else _text_of(key)
            inner = path + (known.get(text) or self._words_of(text))
            if self._reserved(inner):
                return True
            if isinstance(item, Mapping) and self._nested(inner, item, depth + 1):
                return True
            if isinstance(item, list | tuple) and self._in_items(inner, item, depth + 1):
                return True
        return False

    def _in_items(self, path: tuple[str, ...], items: Iterable[Any], depth: int) -> bool:
        """Whether a map in the list ``items`` (under ``path``) holds a reserved key path:
        flattened, ``{"service": [{"name": ...}]}`` is ``service.name`` too."""
        if depth > MAX_DEPTH:
            return False
        for item in items:
            if isinstance(item, Mapping) and self._nested(path, item, depth + 1):
                return True
            if isinstance(item, list | tuple) and self._in_items(path, item, depth + 1):
                return True
        return False
