"""A plugin's folder and its ``plugin.toml``, read into a TOML document: the folder's name,
the file's size, and its text and TOML syntax (:mod:`isoplug.host.toml_text`).
What the document says is checked by :mod:`isoplug.host.manifest`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from isoplug.host.access_denied import READ_FILE, denied, is_denied
from isoplug.host.manifest_types import ManifestError
from isoplug.host.toml_text import MAX_NESTING, TomlTextError, parse_toml
from isoplug.wire.sanitize import clean_path, shows_as_is

__all__ = ["MANIFEST_NAME", "MAX_NESTING", "read_at_most", "read_manifest_document"]

MANIFEST_NAME = "plugin.toml"
#: A manifest is a few hundred bytes; anything near this size is not a manifest.
_MAX_MANIFEST_BYTES = 64 * 1024
#: Where ``os.fsdecode`` puts a byte it cannot decode (PEP 383's surrogate escapes).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def read_manifest_document(directory: Path) -> tuple[Path, dict[str, Any]]:
    """``directory/plugin.toml`` and its document. Raises :class:`ManifestError`."""
    path = directory / MANIFEST_NAME
    if not shows_as_is(directory.name):
        # The folder's path is quoted wherever the host speaks of the plugin (a refused
        # capability, a reload): a name that cannot be shown as it is (a control, a format
        # character, an invisible mark or filler) has no place there.
        raise ManifestError(path, None, _unshowable_name(directory.name))  # sanitized: clean_path
    try:
        raw = read_at_most(path, _MAX_MANIFEST_BYTES)
    except OSError as exc:
        why = denied(path, READ_FILE) if is_denied(exc) else exc.strerror or str(exc)
        raise ManifestError(path, None, f"cannot be read: {why}") from exc
    if raw is None:
        raise ManifestError(
            path, None, f"holds more than {_MAX_MANIFEST_BYTES} bytes, the limit; not read further"
        )
    try:
        document = parse_toml(raw)
    except TomlTextError as exc:
        raise ManifestError(path, None, str(exc)) from exc
    return path, document


def read_at_most(path: Path, limit: int) -> bytes | None:
    """The bytes of the file at ``path``; None when it holds more than ``limit``, of which no
    more than one byte past ``limit`` is read: a path naming ``/dev/zero`` or a FIFO fed
    without end must not fill the process's memory. Raises :class:`OSError`."""
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    return None if len(data) > limit else data


def _unshowable_name(name: str) -> str:
    """Why the folder name ``name`` cannot be shown, and what to do."""
    undecoded = bytes(ord(c) - 0xDC00 for c in name if ord(c) in _ESCAPED_BYTES)
    # A name has 255 bytes at most: shown whole, every character that cannot be escaped.
    shown = f"'{clean_path(name, 1024)}'"
    if not undecoded or not shows_as_is("".join(c for c in name if ord(c) not in _ESCAPED_BYTES)):
        return (
            f"the plugin's folder name {shown} holds control or invisible characters; "
            "rename the folder"
        )
    encoding = sys.getfilesystemencoding()
    said = (
        f"the plugin's folder name {shown} holds bytes that are not {encoding} text "
        f"({' '.join(f'0x{byte:02x}' for byte in undecoded[:8])}, shown as \\udcXX)"
    )
    try:
        name.encode(encoding, "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return f"{said}; rename the folder with a name in UTF-8"
    # Valid UTF-8 that this locale's encoding does not read (LC_ALL=C): the host's locale,
    # not the name, is what to change.
    return (
        f"{said}: UTF-8, which the host's locale does not read; run the host in a "
        "UTF-8 locale (LC_ALL=C.UTF-8, or PYTHONUTF8=1), or rename the folder in ASCII"
    )
