"""Importing a plugin's entry point (``"module:attribute"``) from its directory.

Every way this can go wrong becomes a :class:`PluginLoadError` whose message says what to fix
(the module is not there, the attribute is not there, importing raised, the attribute is not a
:class:`~isoplug.Plugin`), with the import traceback when there is one.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from isoplug.control import PluginEntry
from isoplug.errors import IsoplugError
from isoplug.rpc.remote_errors import traceback_text
from isoplug.runner.api import Plugin
from isoplug.runner.fresh_source import load_fresh_source

__all__ = ["PluginLoadError", "drop_working_directory", "load_plugin_class"]


class PluginLoadError(IsoplugError):
    """The entry point of a plugin could not be loaded; ``traceback_text`` has the details."""

    def __init__(self, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


def drop_working_directory() -> None:
    """Take off ``sys.path`` the working directory that ``python -m`` put first on it.

    Runners are started as ``python -m isoplug.runner`` (or forked from ``python -m
    isoplug.runner.zygote``) in the host's working directory; Python puts that directory first
    on ``sys.path``, where whatever lies there would be imported before a plugin's own
    dependencies (a folder named like a missing module, a stray ``logging.py``). A runner's
    ``sys.path`` is its plugin's folders, ``PYTHONPATH`` and the interpreter's own (see
    docs/plugins.md): as ``python -P`` has it. Called first thing by those ``-m`` entry
    points, so only the entry ``-m`` added is dropped (a ``PYTHONPATH`` entry naming the same
    folder is another entry and stays).
    """
    if sys.flags.safe_path or not sys.path:
        return
    if sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


def load_plugin_class(entry: PluginEntry) -> type[Plugin]:
    """Import ``entry.entry`` with ``entry.folder`` first on ``sys.path``; return the class.

    Raises :class:`PluginLoadError`.
    """
    module_name, _, attribute = entry.entry.partition(":")
    directory = str(Path(entry.folder).resolve())
    # The plugin's folder first, then its sys_path folders, in the manifest's order.
    for position, folder in enumerate((directory, *entry.folders)):
        if folder not in sys.path:
            sys.path.insert(position, folder)
    # Never an older __pycache__ file than the source: a same-second save must not run the
    # code of the save before it.
    load_fresh_source((directory, *entry.folders))
    top_level = module_name.partition(".")[0]
    already = sys.modules.get(top_level)
    if (already is None or not _comes_from(already, directory)) and (
        top_level in sys.stdlib_module_names or top_level in sys.builtin_module_names
    ):
        # Not loaded yet, it would still be the plugin's file for every later import of the
        # standard one in the runner: the plugin's own, its libraries', isoplug's.
        raise PluginLoadError(
            f"plugin {entry.id!r}: its module {top_level!r} is named like a standard module, "
            "which it would replace in its runner for every import (the plugin's own, its "
            "libraries'): give the plugin's module a distinct name"
        )
    if already is not None and not _comes_from(already, directory):
        raise PluginLoadError(
            f"plugin {entry.id!r}: module {top_level!r} is already loaded from "
            f"{getattr(already, '__file__', None) or 'elsewhere'} (another plugin of this group, "
            "or a standard module): give the plugin's module a distinct name"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            hint = (
                f"; an entry names a module, not a file: {module_name[:-3]}:{attribute}"
                if module_name.endswith(".py")
                else ""
            )
            raise PluginLoadError(
                f"plugin {entry.id!r}: entry module {module_name!r} not found in {directory} "
                f"(looked for {module_name.replace('.', '/')}.py and "
                f"{module_name.replace('.', '/')}/__init__.py){hint}"
            ) from None
        raise PluginLoadError(
            f"plugin {entry.id!r}: importing {module_name!r} failed: {exc}",
            traceback_text(exc),
        ) from exc
    except (Exception, SystemExit) as exc:
        # SystemExit too: a module calling sys.exit() at import must not end the runner.
        raise PluginLoadError(
            f"plugin {entry.id!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}",
            traceback_text(exc),
        ) from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        public = sorted(name for name in vars(module) if not name.startswith("_"))
        raise PluginLoadError(
            f"plugin {entry.id!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
            f"has no attribute {attribute!r}; it defines: {', '.join(public) or 'nothing'}"
        ) from None
    if isinstance(found, Plugin):
        raise PluginLoadError(
            f"plugin {entry.id!r}: {entry.entry!r} is an instance of "
            f"{type(found).__qualname__}: the entry names the class, which the runner creates"
        )
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise PluginLoadError(
            f"plugin {entry.id!r}: {entry.entry!r} is {type(found).__name__} {found!r}, "
            "not a subclass of isoplug.Plugin"
        )
    return found


def _comes_from(module: object, directory: str) -> bool:
    path = getattr(module, "__file__", None)
    return path is not None and Path(path).resolve().is_relative_to(directory)
