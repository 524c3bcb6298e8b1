"""In a group runner, no member's logging configuration silences another member's records.

The members of a group share one process, so one ``logging``: the root logger's level, which
every library's logger follows (isoplug's too), and the loggers that ``dictConfig()`` and
``fileConfig()`` disable. A script-style member that configures logging for itself
(``dictConfig()`` with the root at CRITICAL, ``basicConfig(level=..., force=True)``) silenced
the other members' library ERRORs, root-logger WARNINGs and module loggers, and isoplug's word
on them; nothing counted those records, as they were never made. :class:`GroupLogGuard` keeps
what is shared the group's:

- **The root's level is the group's**: the most verbose member's, or the one the host set on
  the root logger (:class:`~isoplug.runner.logging_setup.PluginLevels` says which). The root's
  ``setLevel`` becomes the guard's: a member's code that raises the level (``root.setLevel()``,
  which ``basicConfig(level=...)``, ``dictConfig()`` and ``fileConfig()`` call) has it put
  back in the same call, before its next line runs. A member may lower it. An assignment to
  ``root.level``, which no function sees, is put back after each member's import and setup and
  at the runner's next look (every
  :data:`~isoplug.runner.kept_forwarding.FORWARDING_CHECK_INTERVAL`), and said with that window.
- **A member's configuration disables only its own loggers**: those of its package (its
  entry's top-level module) and of modules in its folder. Any other logger it disabled (another
  member's, a library's, which every member may log on) is enabled again as the
  configuration's last step (:mod:`isoplug.runner.kept_forwarding` calls
  :meth:`GroupLogGuard.enable_others`); a logger named for no module counts as a library's.
  Its own stay disabled, as in a runner of its own. Only the loggers the configuration itself
  disabled count: those a member disabled before (its own choice) are left alone, and another
  member's configuration that enables them (``disable_existing_loggers=False`` enables every
  existing logger) has them disabled again (:meth:`GroupLogGuard.keep_disabled`).

Each undoing is said once per member, as a record of the member it concerns (logged under that
member's :data:`~isoplug.logs.sources.current_source`, so it arrives on
``plugin.<member>.isoplug.runner``): the member whose configuration was undone, and each member
whose loggers it had disabled. Said from the event loop or the restoring thread, never inside
the configuration, which holds logging's lock while it swaps handlers.

A runner of one plugin installs none of this: the plugin's own choice stands there.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from isoplug.control import PluginEntry
from isoplug.log_guard import guarded_logger
from isoplug.logs.sources import current_source, source_of_code

__all__ = ["GroupLogGuard", "group_guard", "guard_group_logging", "member_code"]

_log = guarded_logger("isoplug.runner")
_set_level = logging.Logger.setLevel

_ROOT_ADVICE = (
    "In a group, the root logger's level is the group's: set your own loggers' levels instead "
    "(your package's, or the manifest's log_level)"
)


class _Notice(NamedTuple):
    """A record to log for ``source`` (a member's logger prefix; None: the group's)."""

    source: str | None
    level: int
    message: str
    args: tuple[Any, ...]


class GroupLogGuard:
    """What a group runner does so that no member silences another (see the module
    docstring). Made by :func:`guard_group_logging`."""

    def __init__(self, plugins: Sequence[PluginEntry]) -> None:
        #: Each member's logger prefix, by id; and its package (entry's top-level module).
        self._sources = {plugin.id: f"plugin.{plugin.id}" for plugin in plugins}
        self._packages = {
            f"plugin.{plugin.id}": plugin.entry.partition(":")[0].partition(".")[0]
            for plugin in plugins
        }
        #: The root level the group needs; None until PluginLevels sets it.
        self._group_level: int | None = None
        #: Whether the host set it on the root logger (else the most verbose member needs it).
        self._level_by_host = False
        self._told_root: set[str | None] = set()
        self._notices: list[_Notice] = []
        self._lock = threading.Lock()

    # The root's level

    def set_group_level(self, level: int, *, by_host: bool = False) -> None:
        """Set the root's level to what the group needs (isoplug's own doing: the members'
        levels, or, ``by_host``, the host's word on the root logger)."""
        self._group_level = level
        self._level_by_host = by_host
        _set_level(logging.getLogger(), level)

    def install(self) -> None:
        """Make the root's ``setLevel`` the guard's (see the module docstring)."""
        root = logging.getLogger()

        def set_root_level(level: int | str) -> None:
            _set_level(root, level)
            self.hold_root_level(current_source.get())

        root.setLevel = set_root_level  # type: ignore[method-assign]

    def hold_root_level(self, source: str | None, *, window: float | None = None) -> None:
        """Put the root's level back if ``source``'s code (None: unknown) raised it; say so
        once per member. ``window``: the longest the raised level may have held (seconds),
        when it was found by a look rather than in the setting call."""
        root = logging.getLogger()
        wanted = self._group_level
        tried = root.level
        if wanted is None or tried <= wanted:
            return
        _set_level(root, wanted)
        with self._lock:
            if source in self._told_root:
                return
            self._told_root.add(source)
            tried_name = logging.getLevelName(tried)
            lost = (
                ""
                if window is None
                else (
                    f"; meanwhile (up to {window:.0f} s) the records below {tried_name} of every "
                    "logger that follows the root (libraries', the root logger's, isoplug's) "
                    "were not made, for every member, and cannot be counted"
                )
            )
            who = (
                "the plugin's code"
                if source is not None
                else "a member's code (isoplug cannot tell whose: it assigned root.level)"
            )
            self._notices.append(
                _Notice(
                    source,
                    logging.WARNING,
                    "%s raised the root logger's level to %s; isoplug put it back to %s, %s, "
                    "so that the other members' records (their libraries', their root "
                    "logger's) still arrive%s. %s",
                    (
                        who,
                        logging.getLevelName(tried),
                        logging.getLevelName(wanted),
                        "the level the host set on it"
                        if self._level_by_host
                        else "the level the group's most verbose member needs",
                        lost,
                        _ROOT_ADVICE,
                    ),
                )
            )

    # Disabled loggers

    def enable_others(self, disabled: list[str], configurer: str | None) -> list[str]:
        """Enable again the loggers of ``disabled`` (names of disabled loggers, none of
        isoplug's) that are not the configuring member's own; return those left disabled.
        Only for a configuration made by a member's code (``configurer``, its source): of
        loggers disabled by no member's known code, nothing can be said."""
        if configurer not in self._packages:
            return disabled
        kept: list[str] = []
        enabled: dict[str | None, list[str]] = {}
        loggers = logging.root.manager.loggerDict
        for name in disabled:
            owner = self._owner(name)
            logger = loggers.get(name)
            if owner == configurer or not isinstance(logger, logging.Logger):
                kept.append(name)
                continue
            logger.disabled = False
            enabled.setdefault(owner, []).append(name)
        if enabled:
            self._tell_enabled(configurer, enabled)
        return kept

    def keep_disabled(self, enabled: list[str], configurer: str | None) -> None:
        """Disable again the loggers of ``enabled`` (names of loggers a configuration by
        ``configurer``'s code just enabled, as ``disable_existing_loggers=False`` enables every
        existing logger) that another member's own configuration had disabled: its own choice,
        which stays as in a runner of its own. Said once per configuration, to the
        configurer."""
        if configurer not in self._packages:
            return
        loggers = logging.root.manager.loggerDict
        kept: dict[str, list[str]] = {}
        for name in enabled:
            owner = self._owner(name)
            logger = loggers.get(name)
            if owner is None or owner == configurer or not isinstance(logger, logging.Logger):
                continue
            logger.disabled = True
            kept.setdefault(owner.removeprefix("plugin."), []).append(name)
        if not kept:
            return
        notice = _Notice(
            configurer,
            logging.INFO,
            "the plugin's logging configuration enabled the logger(s) %s, which the logging "
            "configuration of plugin(s) %s disabled; isoplug disabled them again: in a group, "
            "a member's configuration changes only its own loggers, and dictConfig() or "
            "fileConfig() with disable_existing_loggers=False enables every existing one",
            (
                _names({name for names in kept.values() for name in names}),
                ", ".join(sorted(kept)),
            ),
        )
        with self._lock:
            self._notices.append(notice)

    def _tell_enabled(self, configurer: str, enabled: dict[str | None, list[str]]) -> None:
        member = configurer.removeprefix("plugin.")
        notices = [
            _Notice(
                configurer,
                logging.WARNING,
                "the plugin's logging configuration disabled the logger(s) %s, which are not "
                "its own; isoplug enabled them again: in a group, a member's dictConfig() or "
                "fileConfig() disables only its own loggers (its package's), as the other "
                "members log on the rest. To quiet a library for this plugin, set its level "
                "with the host (host.set_log_level), or pass disable_existing_loggers=False",
                (_names({name for names in enabled.values() for name in names}),),
            )
        ]
        for owner, names in enabled.items():
            if owner is not None:
                notices.append(
                    _Notice(
                        owner,
                        logging.INFO,
                        "plugin %s's logging configuration disabled this plugin's logger(s) %s; "
                        "isoplug enabled them again, so their records arrive as from a runner of "
                        "this plugin alone",
                        (member, _names(set(names))),
                    )
                )
        with self._lock:
            self._notices.extend(notices)

    def _owner(self, name: str) -> str | None:
        """The member whose logger ``name`` is (its package's, or a module's in its folder),
        or None (a library's, or named for no module)."""
        top = name.partition(".")[0]
        for source, package in self._packages.items():
            if top == package:
                return source
        prefix = name
        while prefix:
            module = sys.modules.get(prefix)
            filename = getattr(module, "__file__", None)
            if isinstance(filename, str):
                return source_of_code(filename)
            prefix = prefix.rpartition(".")[0]
        return None

    # Saying

    def say_notices(self) -> None:
        """Log what was undone, each as a record of the member it concerns."""
        with self._lock:
            notices, self._notices = self._notices, []
        for notice in notices:
            # Set even to None: a notice of no known member's is the group's, whoever's
            # import or setup just ended.
            token = current_source.set(notice.source)
            try:
                _log.log(notice.level, notice.message, *notice.args)
            finally:
                current_source.reset(token)


def _names(names: set[str]) -> str:
    shown = sorted(names)
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if shown[5:] else "")


_guard: GroupLogGuard | None = None


def guard_group_logging(plugins: Sequence[PluginEntry]) -> GroupLogGuard | None:
    """In a runner of several plugins, install the guard (before any plugin code); return it.
    A runner of one plugin gets none."""
    global _guard  # noqa: PLW0603 # one runner per process
    if len(plugins) < 2:
        return None
    _guard = GroupLogGuard(plugins)
    _guard.install()
    return _guard


def group_guard() -> GroupLogGuard | None:
    """The guard of this group runner, or None (a runner of one plugin, or no runner)."""
    return _guard


@contextmanager
def member_code(source: str) -> Iterator[None]:
    """Run a member's import or setup; then put the root's level back if its code raised it
    by assignment, and say what was undone."""
    try:
        yield
    finally:
        if _guard is not None:
            _guard.hold_root_level(source)
            _guard.say_notices()
