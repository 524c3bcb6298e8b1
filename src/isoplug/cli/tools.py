"""``isoplug new`` and ``isoplug schema``: tools for plugin authors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from isoplug.host.manifest import ManifestError, load_manifest
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
        schema = plugin_toml_schema(manifest, timeout=timeout)
    except (ManifestError, SchemaUnavailable, subprocess.TimeoutExpired) as exc:
        print(f"isoplug schema: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(schema, indent=2))
    return 0
