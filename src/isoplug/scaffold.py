"""``isoplug new``: a new plugin's folder, with its manifest, its code and a test of it that
passes as written (it runs the plugin in a real runner with :mod:`isoplug.testing`)."""

from __future__ import annotations

import importlib.machinery
import keyword
import os
import re
import sys
from pathlib import Path

from isoplug.wire.sanitize import clean_path

__all__ = ["ScaffoldError", "new_plugin"]

#: A plugin id that is also a Python module name (the scaffold's module is named after it),
#: at most as long as a plugin id may be.
_MAX_NAME = 64
#: The most of a path quoted in an error (one line each: its breaks escaped).
_MAX_PATH_CHARS = 1024
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

_MANIFEST = """\
id = "{name}"
version = "0.1.0"
description = "{title}: a plugin made by `isoplug new`."
entry = "{name}:{cls}"
# Host capabilities this plugin may call (ctx.call_host), e.g. ["clock.now"].
capabilities = []
"""

_CODE = '''\
"""The {name} plugin. Its runner process imports this module and starts {cls}."""

from __future__ import annotations

import isoplug


class {cls}(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.greeted = 0
        ctx.logger.info("{name} is set up")

    @isoplug.method
    async def greet(self, name: str) -> str:
        """Called by the host as ``await host.call("{name}", "greet", name="Ada")``."""
        self.greeted += 1
        self.ctx.logger.info("greeting %s", name)
        return f"Hello, {{name}}!"

    @isoplug.method
    def count(self) -> int:
        """A plain (non-async) method: it runs in a worker thread of the runner."""
        return self.greeted

    @isoplug.on_event("reset")
    async def on_reset(self, payload: object) -> None:
        print(f"reset after {{self.greeted}} greeting(s)")
        self.greeted = 0
'''

_TEST = '''\
"""Tests of the {name} plugin, in a real runner process: ``python -m pytest {name}``."""

from pathlib import Path

from isoplug.testing import IsoplugHost

PLUGIN = Path(__file__).parent


def test_greet_answers_and_logs(isoplug_host: IsoplugHost) -> None:
    plugin = isoplug_host(PLUGIN)
    assert plugin.call("greet", name="Ada") == "Hello, Ada!"
    record = plugin.wait_for_record(plugin="{name}", text="greeting Ada")
    assert record.levelname == "INFO"


def test_reset_event_is_printed(isoplug_host: IsoplugHost) -> None:
    plugin = isoplug_host(PLUGIN)
    plugin.call("greet", name="Ada")
    assert plugin.publish("reset") == 1
    plugin.wait_for_record(plugin="{name}", stream="stdout", text="reset after 1 greeting(s)")
    assert plugin.call("count") == 0
'''


def _importable_elsewhere(name: str) -> str | None:
    """Where ``name`` is a module already, in this interpreter (the standard library, an
    installed package): the scaffold's module of that name would be shadowed by it or shadow
    it in the runner. None: it is free. The working directory does not count: the runner
    does not import from it (see docs/plugins.md, "The runner's sys.path")."""
    if name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return "a standard module"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return getattr(loaded, "__file__", None) or "a loaded module"
    here = {"", os.getcwd()}
    path = [entry for entry in sys.path if entry not in here]
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
        return None
    return spec.origin or ", ".join(spec.submodule_search_locations or ()) or "installed"


def _bad_name(name: str) -> str | None:
    """Why ``name`` cannot be a plugin id and module name (None: it can)."""
    if len(name) > _MAX_NAME:
        return f"it has {len(name)} characters, at most {_MAX_NAME}"
    if keyword.iskeyword(name):
        return "it is a Python keyword"
    if not _NAME.fullmatch(name):
        # As plugin ids: ASCII only ("é" is a letter, but no id's).
        return "use an ASCII letter, then ASCII letters, digits or '_'"
    return None


class ScaffoldError(ValueError):
    """The plugin cannot be made there: a bad name, or the folder exists."""


def new_plugin(given: str | os.PathLike[str]) -> list[Path]:
    """Make a plugin folder at ``given`` (its last part is the plugin id and module name);
    return the files written. Raises :class:`ScaffoldError` for a name or place it refuses,
    and :class:`OSError` when the system refuses the folder or its files (nothing is left
    then)."""
    if not os.fspath(given):
        # Path("") is ".": told apart here, while it is still the empty text it was given.
        raise ScaffoldError(
            "the plugin's name is empty: give it (a folder of that name is made), e.g. "
            "'isoplug new weather_report'"
        )
    path = Path(given)
    name = path.name
    if not name:
        # ".", "..", "/": a folder that is there, not the new plugin's.
        raise ScaffoldError(
            f"{str(path)!r} names no new folder: give the plugin's name (a folder of that name "
            "is made), e.g. 'isoplug new weather_report'"
        )
    why = _bad_name(name)
    if why is not None:
        # "my-plugin" most likely meant "my_plugin": the usual spelling of a module's name.
        underscored = name.replace("-", "_")
        example = underscored if _bad_name(underscored) is None else "weather_report"
        raise ScaffoldError(
            f"{name!r} cannot name a plugin: {why} (it is the plugin id and a Python module "
            f"name), e.g. {example!r}"
        )
    taken = _importable_elsewhere(name)
    if taken is not None:
        raise ScaffoldError(
            f"{name!r} cannot name a plugin: a module {name!r} is already importable here "
            f"({clean_path(taken, _MAX_PATH_CHARS)}); the plugin's module would clash with it "
            f"in its runner. Choose another name, e.g. '{name}_plugin'"
        )
    if path.exists():
        raise ScaffoldError(
            f"{clean_path(path, _MAX_PATH_CHARS)} already exists; choose another name or remove it"
        )
    # A missing parent is made (as `mkdir -p` would); a file in its place is not replaced.
    blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ScaffoldError(
            f"{clean_path(blocking, _MAX_PATH_CHARS)} is a file, not a directory: the plugin "
            "folder cannot be made under it; "
            "choose another place"
        )
    cls = "".join(part.capitalize() for part in name.split("_") if part) or name
    if cls == name:
        cls += "Plugin"
    title = name.replace("_", " ").capitalize()
    fields = {"name": name, "cls": cls, "title": title}
    path.mkdir(parents=True)
    files = {
        "plugin.toml": _MANIFEST,
        f"{name}.py": _CODE,
        f"test_{name}.py": _TEST,
    }
    written: list[Path] = []
    try:
        for file_name, template in files.items():
            target = path / file_name
            written.append(target)
            target.write_text(template.format(**fields), encoding="utf-8")
    except OSError:
        # A full disk, a quota: half a plugin would be taken for one ("already exists" the
        # next time). The folder was made here, so it is ours to remove.
        for target in written:
            target.unlink(missing_ok=True)
        path.rmdir()
        raise
    return written
