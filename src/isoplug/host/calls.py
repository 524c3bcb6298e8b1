"""Calling a method of a plugin over its runner's control connection.

The runner answers a :data:`~isoplug.control.CALL` with a :class:`~isoplug.control.CallOutcome`;
this module turns a failed outcome into the matching :class:`~isoplug.errors.RemoteError`
subclass, and transport failures into one exception the supervisor can explain.
"""

from __future__ import annotations

from typing import Any

from isoplug.control import CALL, CallOutcome, CallRequest
from isoplug.errors import (
    REMOTE_ERROR_BY_CODE,
    ConnectionBroken,
    ConnectionClosed,
    RemoteError,
    RequestTimeout,
)
from isoplug.rpc import Peer

__all__ = ["call_plugin"]


async def call_plugin(
    peer: Peer, plugin_id: str, method: str, kwargs: dict[str, Any], timeout: float | None
) -> Any:
    """Call ``plugin_id.method(**kwargs)``; return its result. A cancel point.

    Raises :class:`~isoplug.errors.MethodNotFound`, :class:`~isoplug.errors.InvalidParams`,
    :class:`~isoplug.errors.RemoteError` (the method raised; with its traceback),
    :class:`~isoplug.errors.RequestTimeout` (the call is cancelled in the plugin), and
    :class:`~isoplug.errors.ConnectionBroken` when the session ended before the answer (for
    whatever reason: the caller knows better why).
    """
    try:
        outcome = await peer.request(
            CALL,
            CallRequest(plugin=plugin_id, method=method, kwargs=kwargs),
            timeout=timeout,
            result_type=CallOutcome,
        )
    except RequestTimeout:
        raise RequestTimeout(
            f"plugin {plugin_id!r} did not answer {method!r} within {timeout:g} s "
            "(the call was cancelled in the plugin)"
        ) from None
    except ConnectionClosed as exc:
        raise ConnectionBroken(str(exc)) from exc
    if outcome.error is not None:
        info = outcome.error
        error_class = REMOTE_ERROR_BY_CODE.get(info.code, RemoteError)
        raise error_class(f"{plugin_id}.{method}", info.type, info.message, info.traceback)
    return outcome.result
