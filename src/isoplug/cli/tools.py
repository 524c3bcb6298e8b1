"""``isoplug new`` and ``isoplug schema``: tools for plugin authors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from isoplug.host.manifest import Manifest, ManifestError, load_manifest
from isoplug.host.schema import IMPORT_TIMEOUT, SchemaUnavailable, plugin_toml_schema


def new_plugin(path: Path) -> int:
    from isoplug.scaffold import ScaffoldError, new_plugin

    try:
        written = new_plugin(path)
    except ScaffoldError as exc:
        print(f"isoplug new: {exc}", file=sys.stderr)
        return 2
    print(f"made the plugin {path.name!r} in {path}:")
    for file in written:
        print(f"  {file}")
    print(f"try it:\n  isoplug run {path}\n  python -m pytest {path}")
    return 0


def print_schema(plugin_dir: Path, timeout: float = IMPORT_TIMEOUT) -> int:
    try:
        manifest = load_manifest(plugin_dir)
        schema = plugin_toml_schema(manifest, timeout=timeout, on_output=_show_output(manifest))
    except (ManifestError, SchemaUnavailable, subprocess.TimeoutExpired) as exc:
        print(f"isoplug schema: {exc}", file=sys.stderr)
        return 2
    # ensure_ascii (the default): a plugin's docstrings and names, escaped as JSON does, cannot
    # reach the terminal as control characters.
    print(json.dumps(schema, indent=2))
    return 0


def _show_output(manifest: Manifest) -> Callable[[str], None]:
    """Shows, on stderr, what the plugin wrote while imported (already sanitized): its own
    messages can explain a schema, and stdout holds only the schema."""

    def show(output: str) -> None:
        print(
            f"isoplug schema: plugin {manifest.id!r} wrote this while it was imported "
            f"(not part of the schema):\n{output}",
            file=sys.stderr,
        )

    return show
