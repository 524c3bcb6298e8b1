"""What a sender may not call things in its records: the names under which formatters read a
record's identity, its severity or its message, and the names of the standard levels.

One place for every path a record comes in by (a logging record, a structlog event dict, a
printed JSON line, loguru): :mod:`isoplug.logs.rebuild` applies these rules to every record the
host replays, and :mod:`isoplug.logs.loguru_bridge` and :mod:`isoplug.logs.output_records`
(a printed JSON line's fields) rename the same extras in the plugin.

- **Identity.** :data:`IDENTITY_NAMES` are the attributes and event-dict keys that say who
  logged a record: ``logger`` (what structlog's ``add_logger_name`` writes, and what
  ``ExtraAdder`` would overwrite with an extra of that name), ``plugin_id``, ``runner_pid``...
  A sender's extra or JSON field under one of them arrives as ``extra_<name>``.
- **Severity and message.** :data:`SEVERITY_NAMES` and :data:`MESSAGE_NAMES` are the names
  under which formatters read a record's level and message (``level``, which structlog's
  ``add_log_level`` writes and ``ExtraAdder`` would overwrite with an extra of that name;
  ``event``, structlog's message...). A sender's extra or JSON field under one of them arrives
  as ``extra_<name>`` too: what a host's structlog or JSON output shows as a record's level
  and message is the record's ``levelname`` and message, which its handlers filtered on.
  In a structlog event dict the message names are the event's own (the dict *is* the
  record's message); a severity name there that does not name the record's level is set to
  the record's level, the claim kept as ``extra_<name>`` (:mod:`isoplug.logs.rebuild`).
- **What the host's formatters write themselves.** :data:`CONSUMER_NAMES` are the fields
  structlog's processors and python-json-logger add to a record's output from the record
  itself: its time (``timestamp``, which structlog's ``TimeStamper`` and python-json-logger's
  ``timestamp=True`` write; ``time`` and ``@timestamp``, the usual keys and renames for it),
  its exception and stack (``exception``, from ``format_exc_info``, ``dict_tracebacks`` and
  ``ExceptionRenderer``; ``stack``, from ``StackInfoRenderer``), its level number
  (``level_number``, ``add_log_level_number``), its call site (``func_name``,
  ``thread_name``, ``process_name``, ``qual_name``, ``qual_module``, from
  ``CallsiteParameterAdder``: its other keys are the record's own attributes) and its
  arguments (``positional_args``, ``ProcessorFormatter(pass_foreign_args=True)``). Where such a
  processor runs before ``ExtraAdder`` (or python-json-logger merges the extras after its
  renamed fields), an extra of that name would replace the true value; where the processor
  does not run (no exception, no ``TimeStamper``), the extra would pass for it. A sender's
  extra so named arrives as ``extra_<name>``.
- **The record's own attributes** (:data:`RECORD_ATTRIBUTES`: ``name``, ``levelno``,
  ``asctime``, ``taskName``..., and the host's ``exc_type`` and ``exc_message``) and ``pid``.
- **Namespaces** (:data:`NAMESPACES`): where a whole namespace is a consumer's, every dotted
  name under it is reserved: ``exception.*``, ``code.*``, ``thread.*``, ``process.*`` (the
  OpenTelemetry semantic conventions, which the OpenTelemetry SDK's own ``LoggingHandler``
  exports a record's extras as), ``log.*`` and ``error.*`` (ECS, Datadog: ``log.logger``,
  ``error.type``, ``error.stack_trace``), ``logger.*`` (Datadog's ``logger.name``),
  ``isoplug.*``; and every name starting ``@`` (hclog's ``@module``, ``@caller``...). A map
  under a namespace's name (``{"error": {"type": ...}}``) is reserved too: ECS and Datadog
  flatten it into ``error.type``; so is a map whose path names a reserved name
  (``{"plugin": {"id": ...}}``), and a list holding such maps (``{"error": [{"type":
  ...}]}``: ECS and Elasticsearch flatten an array of objects as an object).

**How a name is read.** As words (:mod:`isoplug.wire.name_words`, the reading OpenTelemetry's
rule, :mod:`isoplug.otel.reserved_names`, uses too): case ignored, invisible characters
dropped, Cyrillic and Greek look-alikes read as Latin letters. So ``Exc_Type``, ``plugin-id``,
``LEVEL`` or ``plugin_\u0456d`` (a Cyrillic ``i``) is renamed as its plain spelling is. A
letter no table lists, in a word whose letters are mostly Latin, is read as any one letter:
the word is the reserved word it then spells (``l\u0585gger``, an Armenian ``o``, is
``logger``), so look-alikes of any script are caught without a table of them all, while words
of other languages (``gr\u00f6\u00dfe``, ``\u0438\u043c\u044f``) keep their names. The
namespaces are read at dots only, not at any separator as OpenTelemetry's rule reads them
(Loki and Prometheus rewrite ``.`` into ``_``; JSON log consumers do not): ``error_code``,
``process_time`` and ``log_file`` are ordinary data, and keep their names.

**A structlog event dict** (a record whose ``msg`` is the dict: python-json-logger merges it
over its own fields, structlog's ``ProcessorFormatter`` renders it as the record) follows the
same rule, key by key (:mod:`isoplug.logs.rebuild`), with what a plugin's own structlog
processors write kept true: its message (``event``...) is the record's; a severity name is
stated as the record's level; a reserved key whose value says what the record says there stays
(``timestamp`` from a plugin-side ``TimeStamper`` within a second of the record's time,
``level_number`` equal to ``levelno``, ``func_name``, ``thread_name``, ``process_name``,
``lineno``, ``thread``... equal to the record's, ``exception`` equal to the record's own
traceback text, ``stack`` to its stack); any other value under a reserved key arrives as
``extra_<key>``. Keeping the truth matters more than renaming it: a plugin whose structlog
stamps its events keeps its ``timestamp``, and a forged one cannot pass (an ``exception``
text on a record without that exception is renamed: the host cannot vouch for it).
- **Host markers.** Every name that starts with :data:`HOST_MARKER_PREFIX` (``isoplug_``)
  is the host's (``isoplug_report`` on its reports, ``isoplug_truncated_keys`` where it cut
  extras, and any such name it adds later): a sender's extra, JSON field or loguru value so
  named arrives as ``extra_<name>`` (:func:`is_reserved`). isoplug's own line classifier
  (:mod:`isoplug.logs.textlines`) sets ``isoplug_truncated_keys`` on records of output
  streams, as it sets ``truncated``. A plugin can log on a logger so named (``stdout``,
  ``plugin.x.stderr``) too: the emitting process sends both flags as they are only on the
  records its capture made (:class:`~isoplug.logs.capture.CapturedLineRecord`), renamed
  ``extra_<name>`` on any other. Plugin code can build such a record too: on those records
  the flags are the runner's claims about its own lines, which the receiver keeps only as
  the capture could set them (:mod:`isoplug.logs.stream_claims`), renamed otherwise.
- **Levels.** :func:`level_name`: a level number that is not a standard one (10, 20, ...)
  never carries a standard level's name (a plugin's ``addLevelName(22, "CRITICAL")`` must not
  make a level-22 record look critical to a formatter, the console or a log pane that shows
  ``levelname``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from isoplug.wire.name_words import lookalike_words, normalized, segments, words

__all__ = [
    "CONSUMER_NAMES",
    "HOST_MARKER_PREFIX",
    "IDENTITY_NAMES",
    "MESSAGE_NAMES",
    "NAMESPACES",
    "RECORD_ATTRIBUTES",
    "RESERVED_NAMES",
    "SEVERITY_NAMES",
    "TRUNCATED_KEYS",
    "add_extras",
    "is_reserved",
    "level_name",
    "renamed",
    "reserved_field",
    "reserved_name",
]

#: The names a record's identity is read under, which the host alone sets (or, for ``logger``
#: and ``logger_name``, which structlog and JSON formatters take as the logger's name): a
#: sender's extra, structlog event key or JSON field so named arrives as ``extra_<name>``.
IDENTITY_NAMES = frozenset(
    {
        "logger",
        "logger_name",
        "plugin_id",
        "runner_pid",
        "process",
        "stream",
        "seq",
        "sender",
        "sender_pid",
        "isoplug_report",
    }
)

#: The names a record's level is read under, in the order a printed JSON line's fields are read
#: as its level (:mod:`isoplug.logs.textlines`): structlog's ``add_log_level`` (``level``),
#: python-json-logger's usual renames of ``levelname`` (``level``, Google Cloud's
#: ``severity``, ECS's ``log.level``), hclog's ``@level``. A sender's extra so named arrives
#: as ``extra_<name>``. Names that are common data too (Datadog's ``status``) are left alone:
#: renaming every ``status`` extra would cost more than the formatter that reads it risks.
SEVERITY_NAMES: tuple[str, ...] = ("level", "levelname", "severity", "@level", "log.level")
#: The names a record's message is read under, in the order a printed JSON line's fields are
#: read as its message: logging's ``message`` and ``msg``, structlog's ``event``, hclog's
#: ``@message``. A sender's extra so named arrives as ``extra_<name>``.
MESSAGE_NAMES: tuple[str, ...] = ("message", "msg", "event", "@message")
#: The fields structlog's processors and python-json-logger write into a record's output
#: themselves, read from the record (see the module docstring): a sender's extra so named
#: arrives as ``extra_<name>``. The names CallsiteParameterAdder shares with a record's own
#: attributes (``lineno``, ``thread``...) are renamed as attributes already.
CONSUMER_NAMES = frozenset(
    {
        # Time: TimeStamper's and python-json-logger's key, and its usual renames.
        "timestamp",
        "time",
        "@timestamp",
        # Exception and stack: format_exc_info, dict_tracebacks, ExceptionRenderer;
        # StackInfoRenderer.
        "exception",
        "stack",
        # add_log_level_number.
        "level_number",
        # CallsiteParameterAdder's names that are not a record attribute's.
        "func_name",
        "thread_name",
        "process_name",
        "qual_name",
        "qual_module",
        # ProcessorFormatter(pass_foreign_args=True): the record's arguments.
        "positional_args",
    }
)
#: Every name a sender's extra (a logging extra, a printed JSON line's field, a loguru bound
#: value) arrives renamed ``extra_<name>`` under, besides the record's own attributes and the
#: host markers (:data:`HOST_MARKER_PREFIX`).
RESERVED_NAMES = (
    IDENTITY_NAMES | frozenset(SEVERITY_NAMES) | frozenset(MESSAGE_NAMES) | CONSUMER_NAMES
)
#: The start of every name the host marks records with (``isoplug_report``...).
HOST_MARKER_PREFIX = "isoplug_"
#: The host's marker of a record whose extras it cut: how many it left out.
TRUNCATED_KEYS = "isoplug_truncated_keys"


#: The record's own attributes (``LogRecord``'s, and ``message``, ``asctime`` and ``taskName``
#: that formatters add) and the host's own fields on every plugin record (``exc_type``,
#: ``exc_message``): a consumer that prints a record's fields shows these as the record's.
RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "exc_type",
    "exc_message",
}
#: Whole namespaces consumers read as a record's own fields (see the module docstring): a
#: dotted name, or a map, under one of them arrives as ``extra_<name>``.
NAMESPACES = frozenset(
    {"exception", "error", "code", "thread", "process", "log", "logger", "isoplug"}
)
#: One word names that say who logged a record, besides :data:`IDENTITY_NAMES` (``pid``).
_MORE_NAMES = frozenset({"pid"})
#: Every reserved name, read as words (``log_level``, ``Log.Level`` and ``log-level`` alike).
_EXACT_WORDS = frozenset(
    words(name) for name in RESERVED_NAMES | RECORD_ATTRIBUTES | _MORE_NAMES
) - {()}
#: Maps nested deeper than this are not looked into (the host sends such a value as text).
_MAX_DEPTH = 8
#: Verdicts on keys seen (bounded: cleared when full); a sender's names repeat.
_MAX_CACHED = 4096
_verdicts: dict[str, bool] = {}


def reserved_name(key: str) -> bool:
    """Whether a sender's field named ``key`` must be renamed, by name alone (the rule of the
    module docstring: :data:`RESERVED_NAMES` and the record's attributes however spelt, a
    dotted name under one of :data:`NAMESPACES`, hclog's ``@`` fields, host markers)."""
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = _judge(key)
        if len(_verdicts) >= _MAX_CACHED:
            _verdicts.clear()
        _verdicts[key] = verdict
    return verdict


def _judge(key: str) -> bool:
    if key.startswith(HOST_MARKER_PREFIX) or normalized(key).lstrip().startswith("@"):
        return True
    found = _words_of(key)
    if found in _EXACT_WORDS or (len(found) > 1 and found[0] == "isoplug"):
        return True
    parts = _segments_of(key)
    return len(parts) > 1 and parts[0] in _NAMESPACE_WORDS


_NAMESPACE_WORDS = frozenset((name,) for name in NAMESPACES)
#: Every word of a reserved name or namespace: what a word with a letter no look-alike table
#: lists is matched against (:func:`~isoplug.wire.name_words.lookalike_words`).
_VOCABULARY = tuple(sorted({word for name in _EXACT_WORDS for word in name} | NAMESPACES))


def _read(key: str) -> str:
    """``key`` as a person reads it: a word with letters of another script read as the
    reserved word it spells (``l\u0585gger``, an Armenian o, is ``logger``)."""
    return lookalike_words(key, _VOCABULARY) or key


#: A path whose first part is a namespace.
_NAMESPACE_PATHS = frozenset(((name,),) for name in NAMESPACES)
#: The most words a reserved name has: a nested path longer names none.
_MOST_WORDS = max(map(len, _EXACT_WORDS))


def reserved_field(key: str, value: Any) -> bool:
    """:func:`reserved_name`, and a map that consumers flatten into a reserved name
    (``{"error": {"type": ...}}`` is ``error.type`` to ECS and Datadog)."""
    if reserved_name(key):
        return True
    kind = type(value)
    if (kind is not dict and kind is not list) or not value:
        return False
    if kind is list and not any(type(item) is dict and item for item in value):
        return False
    if _segments_of(key)[:1] in _NAMESPACE_PATHS:
        return True
    return _nested_in(_words_of(key), value, 0)


def _nested_in(path: tuple[str, ...], value: Any, depth: int) -> bool:
    """:func:`_nested` for a map, or for each map a list holds: ECS and Elasticsearch
    flatten a list of objects as they do an object (``[{"type": ...}]`` under ``error`` is
    ``error.type``)."""
    kind = type(value)
    if kind is dict:
        return bool(value) and _nested(path, value, depth)
    if kind is list:
        for item in value:
            if type(item) is dict and item and _nested(path, item, depth):
                return True
    return False


_segments: dict[str, tuple[tuple[str, ...], ...]] = {}
_words: dict[str, tuple[str, ...]] = {}


def _segments_of(key: str) -> tuple[tuple[str, ...], ...]:
    """:func:`~isoplug.wire.name_words.segments`, remembered (bounded: cleared when full)."""
    found = _segments.get(key)
    if found is None:
        found = segments(_read(key))
        if len(_segments) >= _MAX_CACHED:
            _segments.clear()
        _segments[key] = found
    return found


def _words_of(key: str) -> tuple[str, ...]:
    """:func:`~isoplug.wire.name_words.words`, remembered (bounded: cleared when full): a
    sender's nested keys repeat from record to record."""
    found = _words.get(key)
    if found is None:
        found = words(_read(key))
        if len(_words) >= _MAX_CACHED:
            _words.clear()
        _words[key] = found
    return found


def _nested(path: tuple[str, ...], value: dict[Any, Any], depth: int) -> bool:
    """Whether a key path inside ``value`` (under ``path``, read as words) names a reserved
    name; no deeper than a reserved name has words, nor than _MAX_DEPTH."""
    if depth >= _MAX_DEPTH:
        return False
    for key, item in value.items():
        inner = path + _words_of(key if type(key) is str else str(key))
        if len(inner) > _MOST_WORDS:
            continue
        if inner in _EXACT_WORDS:
            return True
        kind = type(item)
        if (kind is dict or kind is list) and _nested_in(inner, item, depth + 1):
            return True
    return False


def add_extras(attributes: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Set another logging library's ``fields`` (loguru's bound values, a structlog event's)
    on a record's ``attributes`` as extras, one named like a reserved field renamed as the
    host would rename it (:func:`reserved_field`, :func:`renamed`)."""
    for key, value in fields.items():
        attributes[renamed(key, fields, attributes) if reserved_field(key, value) else key] = value


def renamed(key: str, *taken: Mapping[str, Any]) -> str:
    """``extra_<key>``, prefixed again while one of ``taken`` (the sender's fields, those
    kept so far) has that name: ``{"level": 1, "extra_level": 2}`` keeps both."""
    name = f"extra_{key}"
    while any(name in names for names in taken):
        name = f"extra_{name}"
    return name


def is_reserved(key: str, reserved: frozenset[str] = frozenset()) -> bool:
    """Whether a sender's extra ``key`` must be renamed: it is in ``reserved`` (the caller's
    own names: the host's identity keys...) or :func:`reserved_name` says so."""
    return key in reserved or reserved_name(key)


#: Every standard level's name and alias, upper case: no other level number may carry one,
#: in any case (the console and the log pane show ``levelname.lower()``).
_STANDARD_WORDS = frozenset(
    {"CRITICAL", "FATAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "NOTSET"}
)
#: A sender's name for a level of its own (loguru's SUCCESS, TRACE): one short word. Anything
#: else ("INFO isoplug.host:") could forge the start of a host line.
_CUSTOM_LEVEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")


def level_name(levelno: int, claimed: str) -> str:
    """The ``levelname`` of a record at ``levelno`` whose sender named its level ``claimed``.

    A number this process names (the standard ones, and any the host gave a name with
    ``logging.addLevelName``) has this process's name. Another number has the sender's name
    if it is one short word that names no standard level (in any case) and no other level of
    this process's; else ``Level <n>``, as ``logging`` names a level it does not know.
    """
    # getLevelName gives a number's name, or "Level <n>" for a number no one named; given a
    # registered name, it gives that name's number (the public way to ask).
    own = logging.getLevelName(levelno)
    unnamed = f"Level {levelno}"
    if own != unnamed:
        return str(own)
    if (
        _CUSTOM_LEVEL_NAME.fullmatch(claimed)
        and claimed.upper() not in _STANDARD_WORDS
        and _names_no_other_level(claimed, levelno)
        and _names_no_other_level(claimed.upper(), levelno)
    ):
        return claimed
    return unnamed


def _names_no_other_level(name: str, levelno: int) -> bool:
    number = logging.getLevelName(name)
    return not isinstance(number, int) or number == levelno
