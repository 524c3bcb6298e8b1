"""What the runner knows of each plugin method before the first call: worked out once.

A call used to ask ``inspect.signature(function).bind(*args, **kwargs)`` whether its arguments
fit: 15 us per call, a tenth of a round trip, for an answer that is yes almost always.
:class:`MethodInfo` keeps, per method, whether it is ``async``, its name for messages, and an
:class:`ArgumentCheck` made from its signature once, which answers "do these arguments fit?"
with a few dictionary lookups. Only when it cannot say yes does the call go through
``Signature.bind``, whose ``TypeError`` makes the message the host gets (and which decides, should
the quick check be too cautious).

The runner builds these when it loads a plugin: a restarted runner loads the plugin's code
afresh, and so its signatures.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ArgumentCheck", "MethodInfo", "signature_of"]

_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


def signature_of(function: Callable[..., Any]) -> inspect.Signature | None:
    """``function``'s signature; None when Python cannot tell it (some C callables)."""
    try:
        return inspect.signature(function)
    except (ValueError, TypeError):
        return None


class ArgumentCheck:
    """Says whether arguments fit one signature, as ``Signature.bind`` would, but quickly.

    :meth:`fits` never says True where ``bind`` would raise; it may say False where ``bind``
    would accept (then the caller asks ``bind``).
    """

    __slots__ = (
        "_keyword_index",
        "_positional",
        "_required_keyword",
        "_required_positional",
        "_takes_keywords",
        "_takes_more_positional",
        "least_positional",
        "most_positional",
    )

    def __init__(self, signature: inspect.Signature) -> None:
        parameters = list(signature.parameters.values())
        positional = [p for p in parameters if p.kind in (_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD)]
        #: How many arguments may be passed by position (before ``*args``).
        self._positional = len(positional)
        self._takes_more_positional = any(p.kind is _VAR_POSITIONAL for p in parameters)
        self._takes_keywords = any(p.kind is _VAR_KEYWORD for p in parameters)
        #: Name -> position of the parameters a keyword argument may fill: positional ones
        #: (which fail when also passed by position), keyword-only ones (position -1).
        self._keyword_index: dict[str, int] = {
            p.name: index for index, p in enumerate(positional) if p.kind is _POSITIONAL_OR_KEYWORD
        }
        self._keyword_index.update((p.name, -1) for p in parameters if p.kind is _KEYWORD_ONLY)
        #: Parameters without a default: (name, position; -1 if the name cannot fill it).
        self._required_positional = tuple(
            (p.name if p.kind is _POSITIONAL_OR_KEYWORD else "", index)
            for index, p in enumerate(positional)
            if p.default is inspect.Parameter.empty
        )
        self._required_keyword = tuple(
            p.name
            for p in parameters
            if p.kind is _KEYWORD_ONLY and p.default is inspect.Parameter.empty
        )
        # Arguments by position only, the usual call, fit when their number is in
        # [least_positional, most_positional]: parameters with defaults follow those
        # without, so the required ones come first. A required keyword-only parameter
        # leaves no number that fits.
        self.least_positional = len(self._required_positional)
        self.most_positional = (
            -1
            if self._required_keyword
            else (sys.maxsize if self._takes_more_positional else self._positional)
        )

    def fits(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        given = len(args)
        if given > self._positional and not self._takes_more_positional:
            return False
        index_of = self._keyword_index
        for name in kwargs:
            index = index_of.get(name)
            if index is None:
                # A name no parameter has (or a positional-only one): only **kwargs takes it.
                if not self._takes_keywords:
                    return False
            elif 0 <= index < given:
                return False  # passed by position too: "multiple values"
        for name, index in self._required_positional:
            if index >= given and (not name or name not in kwargs):
                return False
        return all(name in kwargs for name in self._required_keyword)


class MethodInfo:
    """One callable method of a loaded plugin, as the runner calls it."""

    __slots__ = (
        "check",
        "function",
        "is_async",
        "least_positional",
        "most_positional",
        "name",
        "signature",
    )

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        #: ``plugin.method``, for messages.
        self.name = name
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        self.signature = signature_of(function)
        self.check = None if self.signature is None else ArgumentCheck(self.signature)
        #: How many arguments by position (and none by name) surely fit: checked inline,
        #: without a call, on every call (see PluginTable.call).
        self.least_positional, self.most_positional = (
            (0, sys.maxsize)
            if self.check is None
            else (self.check.least_positional, self.check.most_positional)
        )

    def bind_error(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TypeError | None:
        """Why ``args`` and ``kwargs`` do not fit the method; None when they do (or when its
        signature is unknown: the method is then left to say so itself)."""
        if not kwargs and self.least_positional <= len(args) <= self.most_positional:
            return None
        check = self.check
        if check is None or check.fits(args, kwargs):
            return None
        assert self.signature is not None
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            # bind() names the first problem only: a misspelled keyword then reads as a
            # missing argument alone. Name the keywords the method has no parameter for too.
            unexpected = self._unexpected(kwargs)
            if unexpected and str(exc).startswith("missing a required argument"):
                return TypeError(f"{exc}; unexpected keyword argument(s) {unexpected}")
            return exc
        return None

    def _unexpected(self, kwargs: Mapping[str, Any]) -> str:
        assert self.signature is not None
        parameters = self.signature.parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return ""
        named = {
            name
            for name, p in parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        return ", ".join(repr(key) for key in kwargs if key not in named)
