"""The log levels a host's user set for one runner, kept across its restarts.

A plugin runs at the level ``Host.set_log_level`` gave it last, else
``SupervisorConfig.log_level``, else its manifest's ``log_level`` (INFO by default): the
host's word beats the plugin's own. That level travels in the runner's bootstrap, so it holds
from the plugin's import on, and is sent again once the runner is ready (a change made while
it started). Levels set on named loggers are sent once it is ready.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from isoplug.control import LogLevelChange
from isoplug.host.config import LEVEL_NAMES
from isoplug.host.manifest import Manifest

__all__ = ["LogLevels", "level_number"]


def level_number(level: int | str) -> int:
    """``level`` as a number; raises ``ValueError`` for an unknown name, ``TypeError`` for
    anything but an int or a str."""
    if isinstance(level, bool) or not isinstance(level, int | str):
        raise TypeError(f"a log level is an int or a level name, got {type(level).__name__}")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"a log level is not negative, got {level}")
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: give a number or a name ({LEVEL_NAMES})")
    return number


class LogLevels:
    """Levels set for the plugins and loggers of one runner; ``default``: the host-wide level
    (``SupervisorConfig.log_level``), None to leave each manifest's."""

    def __init__(self, default: str | None) -> None:
        self._default = None if default is None else level_number(default)
        self._plugins: dict[str, int] = {}
        self._loggers: dict[str, int] = {}
        #: One more at every level set: a runner handed :meth:`changes` as it became ready
        #: may have missed those set meanwhile (see isoplug.host.live_settings).
        self.version = 0

    def set_plugin(self, plugin_id: str, level: int) -> LogLevelChange:
        self._plugins[plugin_id] = level
        self.version += 1
        return LogLevelChange(logger="", level=level, plugin=plugin_id)

    def set_logger(self, logger: str, level: int) -> LogLevelChange:
        self._loggers[logger] = level
        self.version += 1
        return LogLevelChange(logger=logger, level=level)

    def manifests(self, manifests: Sequence[Manifest]) -> list[Manifest]:
        """``manifests``, each with the level its plugin runs at, for the bootstrap."""
        return [dataclasses.replace(m, log_level=self._level_text(m)) for m in manifests]

    def level_of(self, manifest: Manifest) -> int:
        """The level ``manifest``'s plugin runs at (or will, once started)."""
        level = self._plugins.get(manifest.id, self._default)
        return level_number(manifest.log_level) if level is None else level

    def changes(self) -> list[LogLevelChange]:
        """Every level set at runtime, to send to a runner that has just become ready."""
        return [
            *(LogLevelChange(logger="", level=v, plugin=k) for k, v in self._plugins.items()),
            *(LogLevelChange(logger=k, level=v) for k, v in self._loggers.items()),
        ]

    def _level_text(self, manifest: Manifest) -> str:
        level = self._plugins.get(manifest.id, self._default)
        # A number as text: a custom level (15) has no name a runner could look up.
        return manifest.log_level if level is None else str(level)
