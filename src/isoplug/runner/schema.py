"""``python -m isoplug.runner.schema``: print the JSON Schema of a plugin's configuration.

Run by ``isoplug schema PLUGIN_DIR`` in a process of its own, like a runner: importing a
plugin runs its code, which stays out of the command line's process. Reads one
:class:`~isoplug.control.PluginEntry` (JSON) on stdin; prints the schema of the plugin's
``config_schema`` on stdout, or says on stderr why there is none (exit code 3) or why the
runner would refuse the plugin (exit code 5, the runner's own words).
"""

from __future__ import annotations

import contextlib
import sys

import msgspec

from isoplug.control import PluginEntry
from isoplug.errors import ConfigInvalid
from isoplug.runner.config import declared_schema
from isoplug.runner.loader import PluginLoadError, drop_working_directory, load_plugin_class

__all__ = ["EXIT_BAD_SCHEMA", "EXIT_NO_SCHEMA", "main"]

#: The plugin loads but declares no ``config_schema``.
EXIT_NO_SCHEMA = 3
#: The plugin could not be imported.
EXIT_NOT_LOADED = 4
#: Its ``config_schema`` is not a ``msgspec.Struct`` subclass: the runner refuses it.
EXIT_BAD_SCHEMA = 5


def main() -> int:
    entry = msgspec.json.decode(sys.stdin.buffer.read(), type=PluginEntry)
    # What the plugin prints while it is imported must not mix with the schema.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            plugin_class = load_plugin_class(entry)
        except PluginLoadError as exc:
            print(f"{exc}\n{exc.traceback_text}".rstrip(), file=sys.stderr)
            return EXIT_NOT_LOADED
    try:
        schema = declared_schema(entry.id, plugin_class)
    except ConfigInvalid as exc:
        # The runner refuses this plugin: the schema must not pretend it has none.
        print(exc, file=sys.stderr)
        return EXIT_BAD_SCHEMA
    if schema is None:
        print(
            f"plugin {entry.id!r} declares no config_schema; its [config] table is not validated",
            file=sys.stderr,
        )
        return EXIT_NO_SCHEMA
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(schema))))
    sys.stdout.buffer.write(b"\n")
    return 0


if __name__ == "__main__":
    drop_working_directory()
    sys.exit(main())
