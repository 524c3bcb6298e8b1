"""``python -m isoplug.runner.schema``: print the JSON Schema of a plugin's configuration.

Run by ``isoplug schema PLUGIN_DIR`` in a process of its own, like a runner: importing a
plugin runs its code, which stays out of the command line's process. Reads one
:class:`~isoplug.control.PluginEntry` (JSON) on stdin.

Its answer goes to the stdout it was started with, which the plugin never sees: before the
import, that descriptor is moved to a private one and fd 1 is pointed at stderr, so whatever
the plugin writes (``print``, ``sys.stdout``, ``os.write(1, ...)``, from any thread, at any
time) lands on stderr, the plugin's own output, which the caller shows apart. The answer is
the schema (exit code 0), or the runner's words on why there is none (exit code 3), why the
plugin could not be imported (4, with the traceback), why the runner would refuse its
``config_schema`` (5), or why JSON Schema cannot describe it (6). It exits at once when done:
threads or exit hooks the plugin's import left behind do not hold it.
"""

from __future__ import annotations

import os
import sys
import typing
from typing import Any, BinaryIO

import msgspec

from isoplug.control import PluginEntry
from isoplug.control.interpreter_only import give_back
from isoplug.errors import ConfigInvalid
from isoplug.runner.config import declared_schema
from isoplug.runner.loader import PluginLoadError, drop_working_directory, load_plugin_class

__all__ = [
    "EXIT_BAD_SCHEMA",
    "EXIT_NOT_LOADED",
    "EXIT_NO_SCHEMA",
    "EXIT_UNDESCRIBABLE",
    "main",
]

#: The plugin loads but declares no ``config_schema``.
EXIT_NO_SCHEMA = 3
#: The plugin could not be imported.
EXIT_NOT_LOADED = 4
#: Its ``config_schema`` is not a ``msgspec.Struct`` subclass: the runner refuses it.
EXIT_BAD_SCHEMA = 5
#: Its ``config_schema`` has a field of a type msgspec cannot turn into JSON Schema.
EXIT_UNDESCRIBABLE = 6


def main() -> int:
    # The plugin's import may start programs: they get the plugin's environment, as in a runner.
    give_back()
    entry = msgspec.json.decode(sys.stdin.buffer.read(), type=PluginEntry)
    answer = _private_stdout()
    code, text = _answer(entry)
    answer.write(text)
    answer.close()
    return code


def _private_stdout() -> BinaryIO:
    """The stdout this process was started with, as a private descriptor (not inherited by
    the plugin's subprocesses); fd 1 becomes a copy of stderr, so nothing the plugin writes
    can reach the answer."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(private, "wb")


def _answer(entry: PluginEntry) -> tuple[int, bytes]:
    try:
        plugin_class = load_plugin_class(entry)
    except PluginLoadError as exc:
        return EXIT_NOT_LOADED, f"{exc}\n{exc.traceback_text}".rstrip().encode()
    finally:
        # What the plugin printed goes out before the answer is read.
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        schema = declared_schema(entry.id, plugin_class)
    except ConfigInvalid as exc:
        # The runner refuses this plugin: the schema must not pretend it has none.
        return EXIT_BAD_SCHEMA, str(exc).encode()
    if schema is None:
        said = f"plugin {entry.id!r} declares no config_schema; its [config] table is not validated"
        return EXIT_NO_SCHEMA, said.encode()
    try:
        document = msgspec.json.schema(schema)
    except (TypeError, ValueError) as exc:
        return EXIT_UNDESCRIBABLE, _undescribable(entry.id, schema, exc).encode()
    _closed_tables(document)
    return 0, msgspec.json.format(msgspec.json.encode(document)) + b"\n"


def _closed_tables(document: dict[str, Any]) -> None:
    """Every struct's table closed to other keys, as the runner validates it (a typo is an
    error there, whether or not the struct forbids unknown fields): the editor says so too.
    A tagged struct's tag stays allowed (msgspec lists it among the properties)."""
    for definition in document.get("$defs", {}).values():
        if definition.get("type") == "object" and "properties" in definition:
            definition.setdefault("additionalProperties", False)


def _undescribable(plugin_id: str, schema: type[msgspec.Struct], error: Exception) -> str:
    """Which field of ``schema`` msgspec cannot describe, and what to do about it."""
    # msgspec's last line names the type ("type <class ...> is not supported").
    why = str(error).strip().rpartition("\n")[2]
    found = _undescribable_field(schema, "", set())
    where = (
        f"config field {found[0]!r} has type {_type_name(found[1])}, which"
        if found is not None
        else f"config_schema {schema.__qualname__}"
    )
    return (
        f"plugin {plugin_id!r}: {where} has no JSON Schema ({why}); give it a type msgspec "
        "can describe, or annotate it with msgspec.Meta(extra_json_schema={...})"
    )


def _undescribable_field(
    struct: type[msgspec.Struct], prefix: str, seen: set[type]
) -> tuple[str, Any] | None:
    """The first field (dotted path, as TOML spells it) whose type has no schema, inside the
    nested structs too."""
    seen.add(struct)
    for field in msgspec.structs.fields(struct):
        try:
            msgspec.json.schema(field.type)
        except (TypeError, ValueError):
            path = f"{prefix}{field.encode_name}"
            for inner in _structs_in(field.type):
                if inner not in seen:
                    deeper = _undescribable_field(inner, f"{path}.", seen)
                    if deeper is not None:
                        return deeper
            return path, field.type
    return None


def _structs_in(annotation: Any) -> list[type[msgspec.Struct]]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    return [inner for argument in typing.get_args(annotation) for inner in _structs_in(argument)]


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return f"{annotation.__module__}.{annotation.__qualname__}".removeprefix("builtins.")
    return repr(annotation)


if __name__ == "__main__":
    drop_working_directory()
    exit_code = main()
    sys.stdout.flush()  # the plugin's output (fd 1 is stderr by now)
    sys.stderr.flush()
    # At once: a non-daemon thread or an exit hook the plugin's import left behind would hold
    # the exit until the caller's timeout, which would then say the import blocked.
    os._exit(exit_code)
