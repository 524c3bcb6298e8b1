"""``isoplug schema PLUGIN_DIR``: the JSON Schema of a plugin's ``plugin.toml``, for editors.

The manifest's own fields come from the structs that validate them
(:mod:`isoplug.host.manifest`); the ``[config]`` table's schema is the plugin's
``config_schema``, read by importing the plugin in a process of its own
(:mod:`isoplug.runner.schema`), as a runner would.
"""

from __future__ import annotations

import subprocess
from typing import Any

import msgspec

from isoplug.host.environment import runner_environment
from isoplug.host.launch import plugin_entry, runner_python
from isoplug.host.manifest import Manifest, manifest_schema

__all__ = ["IMPORT_TIMEOUT", "SchemaUnavailable", "config_schema", "plugin_toml_schema"]

#: Seconds ``isoplug schema`` waits for a plugin to import, by default: a slow import (a
#: heavy library, a first compile) takes a few seconds; an import that blocks never ends.
IMPORT_TIMEOUT = 20.0
_MAX_REASON_CHARS = 4000
#: python -m isoplug.runner.schema's exit codes (see that module).
_EXIT_NO_SCHEMA = 3
_EXIT_BAD_SCHEMA = 5


class SchemaUnavailable(Exception):
    """The plugin's configuration schema could not be read; ``str()`` says why."""


def config_schema(manifest: Manifest, timeout: float = IMPORT_TIMEOUT) -> dict[str, Any] | None:
    """The JSON Schema of ``manifest``'s plugin's ``config_schema``; None when it declares
    none. Raises :class:`SchemaUnavailable` when the plugin cannot be imported (within
    ``timeout`` seconds, then the importing process is killed), or when its runner would
    refuse its ``config_schema``."""
    try:
        result = subprocess.run(
            [runner_python([manifest]), "-m", "isoplug.runner.schema"],
            input=msgspec.json.encode(plugin_entry(manifest)),
            capture_output=True,
            env=runner_environment([manifest]),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SchemaUnavailable(
            f"plugin {manifest.id!r} did not finish importing within {timeout:g} s (its module "
            "blocks or waits at import?); it was stopped. A plugin should do slow work in "
            "setup(), not at import"
        ) from None
    if result.returncode == _EXIT_NO_SCHEMA:
        return None
    reason = result.stderr.decode("utf-8", "replace").strip()[-_MAX_REASON_CHARS:]
    if result.returncode == _EXIT_BAD_SCHEMA:
        # The runner's own words, the last line (what the plugin printed at import is above).
        raise SchemaUnavailable(reason.rpartition("\n")[2])
    if result.returncode != 0:
        raise SchemaUnavailable(f"plugin {manifest.id!r} could not be imported:\n{reason}")
    schema: dict[str, Any] = msgspec.json.decode(result.stdout)
    return schema


def plugin_toml_schema(manifest: Manifest, timeout: float = IMPORT_TIMEOUT) -> dict[str, Any]:
    """The schema of the whole plugin.toml, its ``config`` being the plugin's own schema
    (any table when it declares none); ``timeout``: see :func:`config_schema`."""
    document = manifest_schema()
    config = config_schema(manifest, timeout)
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
