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

__all__ = ["SchemaUnavailable", "plugin_toml_schema"]

#: Importing a plugin to read its schema: generous, a slow import is not a hung one.
_IMPORT_TIMEOUT = 60.0
_MAX_REASON_CHARS = 4000


class SchemaUnavailable(Exception):
    """The plugin's configuration schema could not be read; ``str()`` says why."""


def config_schema(manifest: Manifest) -> dict[str, Any] | None:
    """The JSON Schema of ``manifest``'s plugin's ``config_schema``; None when it declares
    none. Raises :class:`SchemaUnavailable` when the plugin cannot be imported."""
    result = subprocess.run(
        [runner_python([manifest]), "-m", "isoplug.runner.schema"],
        input=msgspec.json.encode(plugin_entry(manifest)),
        capture_output=True,
        env=runner_environment([manifest]),
        timeout=_IMPORT_TIMEOUT,
        check=False,
    )
    if result.returncode == 3:
        return None
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip()[-_MAX_REASON_CHARS:]
        raise SchemaUnavailable(f"plugin {manifest.id!r} could not be imported:\n{reason}")
    schema: dict[str, Any] = msgspec.json.decode(result.stdout)
    return schema


def plugin_toml_schema(manifest: Manifest) -> dict[str, Any]:
    """The schema of the whole plugin.toml, its ``config`` being the plugin's own schema
    (any table when it declares none)."""
    document = manifest_schema()
    config = config_schema(manifest)
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
