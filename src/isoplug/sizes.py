"""Sizes as people write them in ``plugin.toml`` (``"512MB"``, ``"1.5 GiB"``, ``4096``) and as
the host prints them back (``488.3 MiB``).

``KB``, ``MB``, ``GB`` and ``TB`` are powers of 1000, ``KiB``, ``MiB``, ``GiB`` and ``TiB``
powers of 1024, as the standards have them (``"512MB"`` is 488.3 MiB); ``B`` and a bare
integer are bytes. Units are case-insensitive but for that distinction (``"512mb"`` is 512
MB). A size is below 2**63 bytes.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_size", "parse_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)\s*$")
#: What a size may be written as, for error messages.
SIZE_FORMS = 'a number of bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB ("512MB")'
#: Sizes are below this many bytes (they fit a signed 64-bit integer, as the kernel's limits).
_MAX_SIZE = 2**63


def parse_size(value: int | str) -> int:
    """Bytes in ``value``; raises :class:`ValueError` (saying what a size looks like)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size: {SIZE_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size: sizes are 0 or more")
        return value
    match = _SIZE.match(value)
    unit = _UNITS.get(match["unit"].lower()) if match is not None else None
    if match is None or unit is None:
        raise ValueError(f"{value!r} is not a size: {SIZE_FORMS}")
    size = float(match["number"]) * unit
    if not math.isfinite(size) or size >= _MAX_SIZE:
        raise ValueError(
            f"{value!r} is too large a size: at most {_MAX_SIZE - 1} bytes (8 EiB less one)"
        )
    return int(size)


def format_size(size: int) -> str:
    """``size`` bytes for a reader: ``512 B``, ``12.0 KiB``, ``488.3 MiB``, ``2.00 GiB``."""
    if size < 1024:
        return f"{size} B"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.2f} {unit}" if unit == "GiB" else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
