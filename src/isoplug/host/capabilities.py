"""Host capabilities: functions of the host application that plugins may call.

Which plugin may call which capability is decided by its manifest and checked by the
supervisor; this module only holds the functions and calls them with keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from isoplug.control import CapabilityDenied
from isoplug.wire.sanitize import clean_text

__all__ = ["CapabilityRegistry"]

#: Cap for an error text that quotes what a plugin sent (a keyword argument's name, say).
_MAX_REASON_CHARS = 1000


class CapabilityRegistry:
    """Capabilities by name. Sync functions run on the host's event loop: keep them quick
    (use ``async def`` for anything that waits)."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, function: Callable[..., Any]) -> None:
        """Offer ``function`` as capability ``name`` (replacing any previous one)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a capability name must be a non-empty string, got {name!r}")
        if not callable(function):
            raise TypeError(f"capability {name!r}: {function!r} is not callable")
        self._functions[name] = function

    def names(self) -> list[str]:
        return sorted(self._functions)

    async def invoke(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Call capability ``name``.

        Raises :class:`~isoplug.control.CapabilityDenied` if the host registered none, and
        :class:`TypeError` when ``kwargs`` do not fit the function's signature.
        """
        function = self._functions.get(name)
        if function is None:
            raise CapabilityDenied(
                f"the host has no capability {name!r} (registered: "
                f"{', '.join(self.names()) or 'none'})"
            )
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None  # some builtins have none: let the call itself complain
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                # The plugin receives it as a RemoteError carrying this message.
                raise TypeError(
                    f"arguments do not fit host capability {name}{signature}: "
                    f"{clean_text(str(exc), _MAX_REASON_CHARS)}"
                ) from None
        result = function(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
