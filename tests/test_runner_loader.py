"""Loading a plugin's entry point, and what the runner says when it cannot."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug.control import PluginEntry
from isoplug.runner.api import Plugin
from isoplug.runner.loader import PluginLoadError, load_plugin_class
from tests.plugins_fixtures import FIXTURES


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    """The loader edits sys.path and sys.modules: put them back after each test."""
    path, modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - set(modules):
        del sys.modules[name]


def entry(directory: str, target: str) -> PluginEntry:
    return PluginEntry(id=directory, path=str(FIXTURES / directory), entry=target)


def test_a_good_entry_gives_the_plugin_class() -> None:
    """'module:Class' is imported from the plugin's own directory."""
    loaded = load_plugin_class(entry("echo", "echo_plugin:Echo"))
    assert issubclass(loaded, Plugin) and loaded.__name__ == "Echo"


def test_a_missing_module_says_where_it_looked() -> None:
    """No such module: the message names the module and the files looked for."""
    with pytest.raises(
        PluginLoadError,
        match=r"entry module 'not_there' not found in .*"
        r"missing_module \(looked for not_there.py and not_there/__init__.py\)",
    ):
        load_plugin_class(entry("missing_module", "not_there:Plugin"))


def test_an_import_time_exception_is_reported_with_its_traceback() -> None:
    """The module raising while imported gives the exception and the traceback text."""
    with pytest.raises(PluginLoadError, match="raised ImportError: this plugin needs libfoo") as e:
        load_plugin_class(entry("import_raises", "import_raises_plugin:Plugin"))
    assert "import_raises_plugin.py" in e.value.traceback_text


def test_a_missing_attribute_lists_what_the_module_defines() -> None:
    """A wrong attribute name is reported with the module's public names."""
    with pytest.raises(PluginLoadError, match=r"has no attribute 'Ekko'; it defines: .*Echo"):
        load_plugin_class(entry("echo", "echo_plugin:Ekko"))


def test_an_attribute_that_is_not_a_plugin_class_is_refused() -> None:
    """The entry must name an isoplug.Plugin subclass."""
    with pytest.raises(PluginLoadError, match=r"is function .* not a subclass of isoplug.Plugin"):
        load_plugin_class(entry("not_a_plugin", "not_a_plugin_module:helper"))


def test_a_module_name_taken_by_another_directory_is_refused() -> None:
    """Two plugins of a group must not both ship a module named the same (or one named like
    a library the runner has loaded)."""
    with pytest.raises(PluginLoadError, match="module 'msgspec' is already loaded from"):
        load_plugin_class(entry("echo", "msgspec:Echo"))


@pytest.mark.parametrize("name", ["json", "tabnanny"])
def test_a_module_named_like_a_standard_one_is_refused_loaded_or_not(
    tmp_path: Path, name: str
) -> None:
    """Even one the runner has not imported yet ('tabnanny'): it would replace the standard
    module for every later import in the runner."""
    assert name != "tabnanny" or name not in sys.modules
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    with pytest.raises(PluginLoadError, match=f"its module '{name}' is named like a standard"):
        load_plugin_class(PluginEntry(id="p", path=str(tmp_path), entry=f"{name}:P"))
    assert name not in sys.modules or not str(sys.modules[name].__file__).startswith(str(tmp_path))


def test_an_entry_naming_a_file_or_an_instance_says_what_to_name(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(PLUGIN_SOURCE + "plugin = P()\n")
    with pytest.raises(PluginLoadError, match="an entry names a module, not a file: mine:P"):
        load_plugin_class(PluginEntry(id="p", path=str(tmp_path), entry="mine.py:P"))
    with pytest.raises(PluginLoadError, match="is an instance of P: the entry names the class"):
        load_plugin_class(PluginEntry(id="p", path=str(tmp_path), entry="mine:plugin"))


PLUGIN_SOURCE = "import isoplug\n\n\nclass P(isoplug.Plugin):\n    pass\n"
