"""What a peer serves with: request and event handlers, and how each is registered.

Separate from :mod:`isoplug.rpc.dispatch`, which runs them: a handler's signature, the
:func:`private_errors` mark (which the host's routes put on their handlers) and what the
dispatcher knows of each handler once registered (whether it is ``async``, whether its errors
are private, whether it is a control handler that no load delays) are one small concept of
their own.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final

from isoplug.rpc.remote_errors import error_info
from isoplug.wire import ErrorInfo, LogBatch

__all__ = ["Handler", "LogBatchHandler", "Registered", "private_errors"]

Handler = Callable[[Any], Any]
LogBatchHandler = Callable[[LogBatch], Awaitable[None] | None]

#: The attribute :func:`private_errors` sets on the handler it returns.
_PRIVATE_ERRORS: Final = "_isoplug_private_errors"


def private_errors(handler: Handler) -> Handler:
    """``handler``, whose error answers carry the exception's type and message only, never a
    traceback: neither its own exception's, nor that of a failure around it (params that do
    not fit, a result that cannot be encoded, a cancellation, a bug of this side)."""
    wrapper: Handler
    if inspect.iscoroutinefunction(handler):

        async def wrapper(params: Any) -> Any:
            return await handler(params)

    else:

        def wrapper(params: Any) -> Any:
            return handler(params)

    setattr(wrapper, _PRIVATE_ERRORS, True)
    return wrapper


class Registered:
    """A handler as the dispatcher runs it: worked out once, at its registration."""

    __slots__ = ("control", "function", "is_async", "params_type", "private")

    def __init__(self, function: Handler, params_type: Any, control: bool = False) -> None:
        self.function = function
        #: Served at once whatever the load: never queued behind other requests, nor
        #: refused (see :mod:`isoplug.rpc.admission`). For the few requests that steer the
        #: other side (a new configuration), which must not wait for its work.
        self.control = control
        self.params_type = params_type
        self.is_async = inspect.iscoroutinefunction(function)
        self.private = getattr(function, _PRIVATE_ERRORS, False) is True

    def error(self, code: str, exc: BaseException) -> ErrorInfo:
        """The error answer for ``exc``, which a request served by this handler raised."""
        return error_info(code, exc, with_traceback=not self.private)
