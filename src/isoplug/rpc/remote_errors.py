"""Errors across the session: an exception into an error answer, an error answer into one.

Separate from :mod:`isoplug.rpc.peer` because both directions are pure functions of their
input, used by the peer's calling side (the exception a caller gets), its dispatcher (the
answer a failed handler sends) and the host (:mod:`isoplug.host.calls` raises the same
exceptions for the errors a runner reports about plugin calls). It is where the other side's
texts are capped and sanitized on their way into an exception message.
"""

from __future__ import annotations

import traceback
from typing import Final

from isoplug.errors import REMOTE_ERROR_BY_CODE, RemoteError
from isoplug.wire import ErrorInfo
from isoplug.wire.sanitize import clean_block, clean_text

__all__ = ["error_info", "qualified_name", "remote_error"]

#: Caps for the other side's texts in the exception this side raises (each goes through
#: :func:`~isoplug.wire.sanitize.clean_text` first).
MAX_REMOTE_TYPE_CHARS: Final = 300
MAX_REMOTE_MESSAGE_CHARS: Final = 4 * 1024
MAX_REMOTE_TRACEBACK_CHARS: Final = 64 * 1024
#: Traceback text sent with an error response is capped so that a deep recursion error does
#: not produce a frame the size of the limit.
_MAX_TRACEBACK_CHARS = 64 * 1024


def remote_error(method: str, info: ErrorInfo) -> RemoteError:
    """The exception for an error answer ``info`` to ``method``, its remote texts sanitized."""
    error_class = REMOTE_ERROR_BY_CODE.get(info.code, RemoteError)
    return error_class(
        method,
        clean_text(info.type, MAX_REMOTE_TYPE_CHARS),
        clean_text(info.message, MAX_REMOTE_MESSAGE_CHARS),
        clean_block(info.traceback, MAX_REMOTE_TRACEBACK_CHARS) if info.traceback else "",
    )


def qualified_name(exc_type: type[BaseException]) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as str_failure:
        return f"<str() of {type(exc).__name__} failed: {type(str_failure).__name__}>"


def error_info(code: str, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """The error answer that tells the other side about ``exc``, traceback included, unless
    ``with_traceback`` is False or the exception says its traceback is private
    (``traceback_is_private``)."""
    if not with_traceback or getattr(exc, "traceback_is_private", False):
        return ErrorInfo(code=code, type=qualified_name(type(exc)), message=_safe_str(exc))
    text = "".join(traceback.format_exception(exc))
    if len(text) > _MAX_TRACEBACK_CHARS:
        text = (
            text[: _MAX_TRACEBACK_CHARS // 2]
            + "\n[... traceback truncated ...]\n"
            + text[-_MAX_TRACEBACK_CHARS // 2 :]
        )
    return ErrorInfo(
        code=code, type=qualified_name(type(exc)), message=_safe_str(exc), traceback=text
    )
