"""Which source files are the standard library's: the frames a report of where a plugin's
code waits or failed walks past, to name the plugin's line instead of ``threading.py``.

In a virtual environment ``sysconfig``'s ``platstdlib`` is the venv's own ``lib/pythonX.Y``,
which holds its ``site-packages``: a prefix test alone takes every installed package (isoplug
itself, and a plugin's libraries) for the standard library.
"""

from __future__ import annotations

import os
import sysconfig

__all__ = ["in_stdlib"]

_STDLIB = tuple(os.path.join(sysconfig.get_paths()[name], "") for name in ("stdlib", "platstdlib"))
#: Folders of installed packages; "dist-packages" is Debian's name for them.
_INSTALLED = tuple(os.path.join(sysconfig.get_paths()[name], "") for name in ("purelib", "platlib"))
_INSTALLED_PARTS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def in_stdlib(filename: str) -> bool:
    """True if ``filename`` (a code object's) is a module of the standard library: under its
    folders and not in an installed package's, or one of its frozen modules."""
    if filename.startswith("<frozen "):
        return True
    if not filename.startswith(_STDLIB) or filename.startswith(_INSTALLED):
        return False
    return not any(part in filename for part in _INSTALLED_PARTS)
