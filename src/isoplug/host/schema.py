"""``isoplug schema PLUGIN_DIR``: the JSON Schema of a plugin's ``plugin.toml``, for editors.

The manifest's own fields come from the structs that validate them
(:mod:`isoplug.host.manifest`); the ``[config]`` table's schema is the plugin's
``config_schema``, read by importing the plugin in a process of its own
(:mod:`isoplug.runner.schema`), as a runner would. That process answers on a channel the
plugin cannot write to; what the plugin itself writes while imported (on fd 1 or 2) is its
output, shown apart (``on_output``) or dropped, never taken for the schema. Everything that
process says is the plugin's text, so it reaches a message only through the sanitizer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import msgspec

from isoplug.host.environment import runner_environment
from isoplug.host.helper_process import HelperProcess
from isoplug.host.launch import plugin_entry, runner_python
from isoplug.host.manifest import Manifest, manifest_schema
from isoplug.wire.sanitize import clean_block, clean_text

__all__ = ["IMPORT_TIMEOUT", "SchemaUnavailable", "config_schema", "plugin_toml_schema"]

#: Seconds ``isoplug schema`` waits for a plugin to import, by default: a slow import (a
#: heavy library, a first compile) takes a few seconds; an import that blocks never ends.
IMPORT_TIMEOUT = 20.0
#: What is quoted of the plugin's output or traceback: its last characters, where an error is.
_MAX_QUOTED_CHARS = 4000
#: What is read of that output at most: its end, which is what is quoted.
_MAX_OUTPUT_BYTES = 1024 * 1024
#: python -m isoplug.runner.schema's exit codes (see that module).
_EXIT_NO_SCHEMA = 3
_EXIT_NOT_LOADED = 4
_EXIT_REFUSED = (5, 6)

#: Called with what the plugin wrote while it was imported, sanitized (an indented block).
OutputHandler = Callable[[str], None]


class SchemaUnavailable(Exception):
    """The plugin's configuration schema could not be read; ``str()`` says why (sanitized)."""


def config_schema(
    manifest: Manifest, timeout: float = IMPORT_TIMEOUT, on_output: OutputHandler | None = None
) -> dict[str, Any] | None:
    """The JSON Schema of ``manifest``'s plugin's ``config_schema``; None when it declares
    none. Raises :class:`SchemaUnavailable` when the plugin cannot be imported (within
    ``timeout`` seconds, then the importing process is killed), or when its runner would
    refuse its ``config_schema``, or JSON Schema cannot describe it. ``on_output`` is given
    what the plugin wrote while imported, sanitized, when it wrote anything and the schema
    came back (on a failure it is part of the error); without it, that output is dropped."""
    result = _import_in_process(manifest, timeout)
    if result is None:
        raise SchemaUnavailable(
            f"plugin {manifest.id!r} did not finish importing within {timeout:g} s (its module "
            "blocks or waits at import?); it was stopped. A plugin should do slow work in "
            "setup(), not at import"
        )
    answer = result.stdout.decode("utf-8", "replace").strip()
    output = _quoted(result.stderr)
    if result.returncode == _EXIT_NO_SCHEMA:
        if output and on_output is not None:
            on_output(output)
        return None
    if result.returncode in _EXIT_REFUSED:
        # The runner's own words: one line, about the plugin's code.
        raise SchemaUnavailable(clean_text(answer, _MAX_QUOTED_CHARS) + _besides(output))
    if result.returncode == _EXIT_NOT_LOADED:
        raise SchemaUnavailable(
            f"plugin {manifest.id!r} could not be imported:\n{_quoted(result.stdout)}"
            + _besides(output)
        )
    if result.returncode != 0:
        ended = (
            f"was killed by signal {-result.returncode}"
            if result.returncode < 0
            else f"ended with exit code {result.returncode}"
        )
        raise SchemaUnavailable(
            f"plugin {manifest.id!r}: the process importing it {ended} before it answered"
            + _besides(output)
        )
    try:
        schema: dict[str, Any] = msgspec.json.decode(result.stdout)
    except msgspec.DecodeError:
        raise SchemaUnavailable(
            f"plugin {manifest.id!r}: the process importing it answered no JSON Schema "
            f"(something wrote to its private answer channel):\n{_quoted(result.stdout)}"
        ) from None
    if output and on_output is not None:
        on_output(output)
    return schema


def _import_in_process(
    manifest: Manifest, timeout: float
) -> subprocess.CompletedProcess[bytes] | None:
    """Run ``python -m isoplug.runner.schema`` for ``manifest``; None when it did not answer
    within ``timeout`` seconds. Synchronous, for the command and its callers: the work runs on
    an event loop of its own (in a thread of its own when the caller's thread runs one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_ask(manifest, timeout))
    with concurrent.futures.ThreadPoolExecutor(1, "isoplug-schema") as executor:
        return executor.submit(asyncio.run, _ask(manifest, timeout)).result()


async def _ask(manifest: Manifest, timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    """The import, in a :class:`~isoplug.host.helper_process.HelperProcess`: its answer is
    what it wrote on its private descriptor (its stdout) by its exit, though a process its
    import forked holds that pipe too; whatever the import started is ended with it. What the
    plugin writes goes to a file (its last ``_MAX_OUTPUT_BYTES``), never into the answer."""
    argv = [runner_python([manifest]), "-m", "isoplug.runner.schema"]
    with tempfile.TemporaryFile() as output:
        helper = await HelperProcess.start(
            argv,
            runner_environment([manifest]),
            msgspec.json.encode(plugin_entry(manifest)),
            stderr=output,
        )
        try:
            async with asyncio.timeout(timeout):
                # Its exit ends the reading at once (see HelperProcess): what it wrote by then
                # is the answer.
                answer = await helper.stdout.read()
                returncode = await helper.wait()
        except TimeoutError:
            return None
        finally:
            await helper.close()
        size = output.seek(0, 2)
        output.seek(max(0, size - _MAX_OUTPUT_BYTES))
        said = output.read()
    return subprocess.CompletedProcess(argv, returncode, answer, said)


def _quoted(raw: bytes) -> str:
    """The plugin's text as an indented, escaped block: its last characters when it is long
    (a traceback's end says what failed)."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > _MAX_QUOTED_CHARS:
        cut = len(text) - _MAX_QUOTED_CHARS
        text = f"[{cut} characters before this cut]\n" + text[cut:]
    return clean_block(text, _MAX_QUOTED_CHARS * 2)


def _besides(output: str) -> str:
    return f"\n  (what it wrote while imported:)\n{output}" if output else ""


def plugin_toml_schema(
    manifest: Manifest, timeout: float = IMPORT_TIMEOUT, on_output: OutputHandler | None = None
) -> dict[str, Any]:
    """The schema of the whole plugin.toml, its ``config`` being the plugin's own schema
    (any table when it declares none); ``timeout``, ``on_output``: see :func:`config_schema`."""
    document = manifest_schema()
    config = config_schema(manifest, timeout, on_output)
    if config is None:
        return document
    # The plugin's definitions go under names of their own: they cannot clash with ours.
    definitions = {f"config.{name}": body for name, body in config.pop("$defs", {}).items()}
    config = _renamed_references(config)
    document.setdefault("$defs", {}).update(_renamed_references(definitions))
    root = document["$defs"][document["$ref"].rpartition("/")[2]]
    root["properties"]["config"] = config
    return document


def _renamed_references(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (
                "#/$defs/config." + item.rpartition("/")[2]
                if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/")
                else _renamed_references(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renamed_references(item) for item in value]
    return value
