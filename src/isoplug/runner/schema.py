"""``python -m isoplug.runner.schema``: print the JSON Schema of a plugin's configuration.

Run by ``isoplug schema PLUGIN_DIR`` in a process of its own, like a runner: importing a
plugin runs its code, which stays out of the command line's process. Reads one
:class:`~isoplug.control.PluginEntry` (JSON) on stdin; prints the schema of the plugin's
``config_schema`` on stdout, or says on stderr why there is none (exit code 3).
"""

from __future__ import annotations

import contextlib
import sys

import msgspec

from isoplug.control import PluginEntry
from isoplug.runner.loader import PluginLoadError, load_plugin_class

__all__ = ["EXIT_NO_SCHEMA", "main"]

#: The plugin loads but declares no ``config_schema`` (or not a msgspec.Struct).
EXIT_NO_SCHEMA = 3
#: The plugin could not be imported.
EXIT_NOT_LOADED = 4


def main() -> int:
    entry = msgspec.json.decode(sys.stdin.buffer.read(), type=PluginEntry)
    # What the plugin prints while it is imported must not mix with the schema.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            plugin_class = load_plugin_class(entry)
        except PluginLoadError as exc:
            print(f"{exc}\n{exc.traceback_text}".rstrip(), file=sys.stderr)
            return EXIT_NOT_LOADED
    schema = getattr(plugin_class, "config_schema", None)
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        print(
            f"plugin {entry.id!r} declares no config_schema (a msgspec.Struct subclass); "
            f"its [config] table is not validated",
            file=sys.stderr,
        )
        return EXIT_NO_SCHEMA
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(schema))))
    sys.stdout.buffer.write(b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
