"""Names a package imports on first use (PEP 562): what a package's ``__init__`` needs to
export names of heavy modules without importing them when it is imported itself.

``isoplug`` does so, so that a runner does not import the host's code and ``import
isoplug.wire`` does not pull in asyncio; ``isoplug.testing`` does so, because pytest imports
it (through isoplug's pytest plugin) in every session of an environment where isoplug is
installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str,
    where: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    public: Sequence[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: a name of ``where`` is imported
    from the module it maps to on first use, then kept in ``namespace`` (the package's
    ``globals()``), so that the next use costs nothing; ``dir()`` lists ``public``."""

    def get(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def listed() -> list[str]:
        return sorted(public)

    return get, listed
