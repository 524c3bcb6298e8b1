"""``isoplug new`` and ``isoplug schema``: tools for plugin authors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from isoplug.cli.say import say_error, shown, shown_argument
from isoplug.host.access_denied import WRITE_FOLDER, denied, is_denied
from isoplug.host.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from isoplug.host.plugin_folders import manifest_may_exist
from isoplug.host.schema import IMPORT_TIMEOUT, SchemaUnavailable, plugin_toml_schema


def new_plugin(argument: str) -> int:
    from isoplug.scaffold import ScaffoldError, new_plugin

    try:
        written = new_plugin(argument)
    except ScaffoldError as exc:
        say_error("new", str(exc))
        return 2
    except OSError as exc:
        say_error("new", f"cannot make the plugin's folder {shown(argument)}: {_refused(exc)}")
        return 2
    path = Path(argument)
    print(f"made the plugin {path.name!r} in {shown(path)}:")
    for file in written:
        print(f"  {shown(file)}")
    command_path = shown_argument(path)
    print(f"try it:\n  isoplug run {command_path}\n  python -m pytest {command_path}")
    return 0


def print_schema(plugin_dir: Path, timeout: float = IMPORT_TIMEOUT) -> int:
    if plugin_dir.name == MANIFEST_NAME and plugin_dir.is_file():
        plugin_dir = plugin_dir.parent  # the plugin.toml an editor has open: its folder's
    try:
        manifest = load_manifest(plugin_dir)
        schema = plugin_toml_schema(manifest, timeout=timeout, on_output=_show_output(manifest))
    except (ManifestError, SchemaUnavailable, subprocess.TimeoutExpired) as exc:
        inside = sorted(plugin_dir.glob(f"*/{MANIFEST_NAME}"))
        if inside and not manifest_may_exist(plugin_dir / MANIFEST_NAME):
            # A plugins folder: the schema is one plugin's.
            say_error(
                "schema",
                f"{shown(plugin_dir)} holds no plugin.toml; it is a plugins folder: give one "
                f"plugin's folder, e.g. isoplug schema {shown_argument(inside[0].parent)}",
            )
            return 2
        say_error("schema", str(exc))
        return 2
    # ensure_ascii (the default): a plugin's docstrings and names, escaped as JSON does, cannot
    # reach the terminal as control characters.
    print(json.dumps(schema, indent=2))
    return 0


def _refused(error: OSError) -> str:
    """Why the system refused a path ``isoplug new`` wanted (a folder it may not write in),
    naming the folder to change."""
    if is_denied(error) and error.filename is not None:
        # The folder it was made in, or the nearest one that exists (mkdir -p).
        target = Path(os.fsdecode(error.filename))
        place = next((p for p in target.parents if os.path.lexists(p)), target.parent)
        return denied(place, WRITE_FOLDER, instead="make it in another folder")
    return error.strerror or str(error)


def _show_output(manifest: Manifest) -> Callable[[str], None]:
    """Shows, on stderr, what the plugin wrote while imported (already sanitized): its own
    messages can explain a schema, and stdout holds only the schema."""

    def show(output: str) -> None:
        say_error(
            "schema",
            f"plugin {manifest.id!r} wrote this while it was imported (not part of the "
            f"schema):\n{output}",
        )

    return show
