"""What one printed line says of itself: its level, and for a JSON or logfmt line, its
message and fields (:mod:`isoplug.logs.textlines` makes records of lines and blocks).

- **JSON lines.** A line that is one JSON object with a message (``message``, ``msg``,
  ``event`` or hclog's ``@message``) is a record at its level (``level``, ``levelname``,
  ``severity`` or ``@level``; loguru's ``serialize=True`` nests both under ``record``). Its
  other fields become extras: scalars as they are, anything else as compact JSON text. A level
  no one knows leaves the stream's default level in place.
- **logfmt lines** (only ``key=value`` pairs, one a message: logrus, Go's slog, structlog's
  ``KeyValueRenderer``) likewise, their values as text.
- **Levels.** ``ERROR: disk full``, ``[warning] slow``, ``<debug> x``, Python's default
  ``ERROR:app.db:x``, a level right after a leading time, glog's ``E1207 ... fd.cc:12]``, a
  logfmt ``level=`` pair. The text is kept whole.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import msgspec

from isoplug.logs.record_names import (
    HOST_MARKER_PREFIX,
    MESSAGE_NAMES,
    SEVERITY_NAMES,
    TRUNCATED_KEYS,
)

__all__ = [
    "MAX_JSON_CHARS",
    "MAX_JSON_EXTRAS",
    "MAX_JSON_VALUE_CHARS",
    "level_from_name",
    "level_of_prefix",
    "parse_json_line",
    "parse_logfmt_line",
    "parse_structured",
]

#: A JSON line longer than this is not parsed (kept as text): a log line of structured data is
#: a few hundred bytes; parsing megabytes per line would let a flood cost the reader dearly.
MAX_JSON_CHARS = 64 * 1024
#: JSON fields kept as extras, at most; a line with more keeps the first ones.
MAX_JSON_EXTRAS = 64
#: A JSON extra that is not a scalar is kept as compact JSON text up to this length.
MAX_JSON_VALUE_CHARS = 4 * 1024

_LEVELS: dict[str, int] = {
    "TRACE": 5,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "INFORMATION": logging.INFO,
    "NOTICE": logging.INFO,
    "SUCCESS": 25,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "ERR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "CRIT": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "EMERGENCY": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}
# ``ERROR: x``, ``[error] x``, ``<ERROR> x``: a known level name, bracketed or with a colon, as
# the first word. A bare first word ("Error handling is hard") is prose, not a level. Also
# ``ERROR:app.db:x``, Python's own default format (``logging.basicConfig()``'s, a child
# process's): the level, a logger's name, a colon.
_PREFIX = re.compile(
    r"(?:\[\s*(?P<bracketed>[A-Za-z]{3,9})\s*\]|<(?P<angled>[A-Za-z]{3,9})>|(?P<colon>[A-Za-z]{3,9}):)"
    r"(?=\s|$|(?<=:)[\w.-]+:)"
)
#: A JSON line's message and level are read under the names formatters read them under: the
#: same names a sender's extra may not take (so a line's other such fields arrive renamed).
_MESSAGE_KEYS = MESSAGE_NAMES
_LEVEL_KEYS = SEVERITY_NAMES
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()
#: A JSON escape of a UTF-16 surrogate. msgspec refuses a lone one, which Python's ``json``
#: reads, and ``json.dumps`` writes for a file name that is not UTF-8 (``"caf\udce9.pdf"``):
#: what a JSON formatter prints of such a name, so a line holding one is read again by ``json``.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def level_from_name(value: Any) -> int | None:
    """A level number for a level as text (``"warn"``, ``"Error"``) or a number in range;
    None for anything else (an absurd level, a non-scalar)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 100 else None
    if isinstance(value, str) and len(value) <= 16:
        return _LEVELS.get(value.strip().upper())
    return None


def _plain_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        text = _json_encoder.encode(value).decode()
    except (TypeError, ValueError, OverflowError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= MAX_JSON_VALUE_CHARS else text[:MAX_JSON_VALUE_CHARS] + "..."


def parse_json_line(line: str) -> tuple[int | None, str, dict[str, Any]] | None:
    """``(level or None, message, extras)`` for a JSON object line with a message; else None."""
    if len(line) > MAX_JSON_CHARS:
        return None
    try:
        value = _json_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError):
        value = _with_lone_surrogates(line)
    if not isinstance(value, dict):
        return None
    source: dict[str, Any] = value
    nested = value.get("record")
    if isinstance(nested, dict) and "message" in nested and "level" in nested:
        # loguru's serialize=True: {"text": ..., "record": {"level": {"name", "no"}, ...}}.
        source = nested
    return _from_fields(source, value)


def _with_lone_surrogates(line: str) -> Any:
    """``line`` read by Python's ``json``, which takes lone surrogates, each then written as
    the sanitizer escapes it (``\\udce9``), so that no text of the record holds one; None
    for a line without one, or not JSON."""
    if _SURROGATE_ESCAPE.search(line) is None:
        return None
    try:
        return _escaped_surrogates(json.loads(line))
    except (ValueError, RecursionError):
        return None


def _escaped_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escaped_surrogates(key): _escaped_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped_surrogates(item) for item in value]
    return value


#: One ``key=value`` pair of a logfmt line, its value bare or quoted (escapes inside).
_LOGFMT_PAIR = re.compile(r"""([\w.@-]+)=(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s"']*))""")
_LOGFMT_ESCAPE = re.compile(r"\\(.)")


def parse_logfmt_line(line: str) -> tuple[int | None, str, dict[str, Any]] | None:
    """``(level or None, message, extras)`` for a logfmt line (only ``key=value`` pairs, one
    of them a message: logrus, Go's slog, structlog's ``KeyValueRenderer``); else None."""
    if len(line) > MAX_JSON_CHARS:
        return None
    fields: dict[str, Any] = {}
    end = 0
    for match in _LOGFMT_PAIR.finditer(line):
        if line[end : match.start()].strip():
            return None  # text between the pairs: not logfmt
        key, double, single, bare = match.groups()
        quoted = double if double is not None else single
        fields[key] = bare if quoted is None else _LOGFMT_ESCAPE.sub(r"\1", quoted)
        end = match.end()
    if not fields or line[end:].strip():
        return None
    return _from_fields(fields, fields)


def _from_fields(
    source: dict[str, Any], top: dict[str, Any]
) -> tuple[int | None, str, dict[str, Any]] | None:
    """A structured line's message, level and extras, from its fields (``source``: those of
    the record, which ``top`` holds, or is)."""
    message: Any = None
    message_key = None
    for key in _MESSAGE_KEYS:
        if key in source:
            message, message_key = source[key], key
            break
    if message_key is None:
        return None
    level: int | None = None
    level_key = None
    for key in _LEVEL_KEYS:
        if key in source:
            raw = source[key]
            if isinstance(raw, dict):  # loguru: {"name": "SUCCESS", "no": 25}
                level = level_from_name(raw.get("no")) or level_from_name(raw.get("name"))
            else:
                level = level_from_name(raw)
            level_key = key
            break
    extras: dict[str, Any] = {}
    bound = source.get("extra") if source is not top else None
    fields = {**source, **bound} if isinstance(bound, dict) else source
    skipped = {message_key, level_key, "extra" if source is not top else None}
    kept = 0
    for key, field in fields.items():
        if key in skipped:
            continue
        if kept == MAX_JSON_EXTRAS:
            # The fields left out, not counting the message and level (which are the record's).
            extras[TRUNCATED_KEYS] = len(fields) - kept - len(skipped & fields.keys())
            break
        kept += 1
        if key.startswith(HOST_MARKER_PREFIX):
            # The host's markers are the host's (this classifier sets one just above): the
            # line's own field is kept, renamed, as the receiver renames a sender's extra.
            extras[_renamed(key, fields, extras)] = _plain_value(field)
        else:
            extras[key] = _plain_value(field)
    text = message if isinstance(message, str) else _plain_value(message)
    return level, str(text), extras


def _renamed(key: str, fields: dict[str, Any], extras: dict[str, Any]) -> str:
    """``extra_<key>``, prefixed again while the line or the extras so far have that name."""
    name = f"extra_{key}"
    while name in fields or name in extras:
        name = f"extra_{name}"
    return name


# A time first, then the level: ``2026-12-07 06:59:25,123 ERROR app: x`` (Python's usual
# ``%(asctime)s %(levelname)s``), ``2026-12-07T06:59:25.123Z [WARN] x`` (Go's hclog, many
# others), ``[06:59:25] INFO x``, ``2026-12-07 06:59:25.123 | ERROR    | app:f:1 - x`` (loguru's
# default sink, in a child process of the plugin). After a time, a bare level word counts, in
# capitals only ("12:00 Error handling is hard" stays prose).
_STAMPED = re.compile(
    r"\[?(?:\d{4}-\d\d-\d\d[T ])?\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?"
    r"\s+(?:\|\s*)?"
    r"(?:\[\s*(?P<bracketed>[A-Za-z]{3,9})\s*\]|<(?P<angled>[A-Za-z]{3,9})>"
    r"|(?P<word>[A-Z]{3,9}):?)"
    r"(?=\s|$|\|)"
)

#: glog's and absl's (C++ libraries: gRPC's core, TensorFlow...): the level's letter, the date,
#: the time, the thread, the file and line, ``]``: ``E1207 06:59:25.123456  4242 fd.cc:12] x``.
_GLOG = re.compile(r"[IWEF]\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] ")
_GLOG_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
#: logfmt (logrus's and Go's slog text format, structlog's ``KeyValueRenderer``): a line of
#: ``key=value`` pairs, its level under ``level``: ``time="..." level=error msg="lost"``. The
#: line must start with a pair, and the level be one of the first pairs.
_LOGFMT_START = re.compile(r"[\w.@-]+=")
_LOGFMT_LEVEL = re.compile(r"(?:^|\s)(?:level|lvl|severity)=([\"']?)([A-Za-z]{3,11})\1(?=\s|$)")
#: How far into a logfmt line its level is looked for (a time, a source location before it).
_LOGFMT_LEVEL_WITHIN = 120


def level_of_prefix(line: str) -> int | None:
    """The level a ``LEVEL:`` / ``[LEVEL]`` / ``LEVEL text`` line starts with, if any, or
    says right after a time it starts with, in glog's format, or in a logfmt pair."""
    match = _PREFIX.match(line)
    if match is not None:
        return _LEVELS.get((match["bracketed"] or match["angled"] or match["colon"]).upper())
    if line[:1].isdigit() or line[1:2].isdigit():
        match = _STAMPED.match(line)
        if match is not None:
            return _LEVELS.get((match["bracketed"] or match["angled"] or match["word"]).upper())
        if line[:1] in _GLOG_LEVELS and _GLOG.match(line):
            return _GLOG_LEVELS[line[0]]
    if "=" in line[:10] and _LOGFMT_START.match(line):
        match = _LOGFMT_LEVEL.search(line, 0, _LOGFMT_LEVEL_WITHIN)
        if match is not None:
            return _LEVELS.get(match[2].upper())
    return None


def parse_structured(line: str) -> tuple[int | None, str, dict[str, Any]] | None:
    """``(level or None, message, extras)`` for a JSON or logfmt line; else None."""
    if line[:1] == "{":
        return parse_json_line(line)
    if "=" in line[:10] and _LOGFMT_START.match(line):
        return parse_logfmt_line(line)
    return None
