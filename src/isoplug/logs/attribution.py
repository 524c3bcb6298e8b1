"""Who says a record, as a one-line view shows it (``isoplug run``'s console, its ``--tui`` log
pane): the source column and the label beside it.

A plugin's records are all on ``plugin.<id>...`` loggers, and so are the host's reports about
that plugin (records lost, dropped, rate-limited, a reconnection: ``isoplug_report`` set, see
:mod:`isoplug.logs.replay_reports`), whose text a plugin can imitate word for word on its root
logger. What tells them apart is the source column, which only the host fills in:

- a plugin's record: the plugin's id, which matches ``[A-Za-z][A-Za-z0-9_-]*`` (the manifest
  checks it);
- the host's report about plugin ``fake``: ``isoplug:fake``, with a colon no id contains;
- the host's own records (every logger not under ``plugin.``): ``isoplug``;
- a plugin whose id reads ``isoplug`` in any case: ``plugin.<id>``, with a dot no id
  contains, so that it cannot pass for the host.

The label beside the source is the record's level, lower case (``error``); on a plugin's
output streams (``plugin.<id>.stdout`` / ``.stderr``) it names the stream too: the stream
alone for a record at the level a printed line gets when it says none (``stdout``: INFO,
``stderr``: WARNING), else the stream and the level (``stdout:error``: a printed JSON line at
error level, or a plugin's ERROR record on a logger named ``stdout``), so that a line's level
is never hidden behind its stream.

Nothing else of the line is the host's alone: the message, the logger's name below the id,
the extras and a custom level's name (one word, ``isoplug`` included) are the plugin's to
choose. A plugin sets no ``isoplug_report``: the host renames its ``isoplug_*`` extras
``extra_isoplug_*``.
"""

from __future__ import annotations

import dataclasses
import logging

__all__ = ["HOST_SOURCE", "Attribution", "attribute"]

#: The source column of the host's own records.
HOST_SOURCE = "isoplug"

#: Each output stream's level for a printed line that says none, in a runner (the defaults of
#: isoplug.logs.redirect; isoplug.host.stdio_reader's for fd-level lines): a record at it is
#: labelled with the stream's name alone.
_STREAM_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    #: The plugin the record is from or about (its id), or None for the host's own records.
    plugin: str | None
    #: What the source column shows (see the module docstring).
    source: str
    #: The level's name, lower case; on a plugin's output streams ``stdout``/``stderr`` at
    #: the stream's own level, else ``<stream>:<level>`` (see the module docstring).
    label: str
    #: The host says it: its own record, or its report about ``plugin``.
    host: bool


def attribute(record: logging.LogRecord) -> Attribution:
    """The :class:`Attribution` of ``record``, by its logger's name and ``isoplug_report``."""
    parts = record.name.split(".", 3)
    level = record.levelname.lower()
    if parts[0] != "plugin" or len(parts) < 2:
        return Attribution(None, HOST_SOURCE, level, host=True)
    plugin = parts[1]
    # `is True`: the host sets exactly True; a plugin's extra of that name never arrives as is.
    if record.__dict__.get("isoplug_report") is True:
        return Attribution(plugin, f"{HOST_SOURCE}:{plugin}", level, host=True)
    source = f"plugin.{plugin}" if plugin.casefold() == HOST_SOURCE else plugin
    label = level
    stream_level = _STREAM_LEVELS.get(parts[2]) if len(parts) > 2 else None
    if stream_level is not None:
        label = parts[2] if record.levelno == stream_level else f"{parts[2]}:{level}"
    return Attribution(plugin, source, label, host=False)
