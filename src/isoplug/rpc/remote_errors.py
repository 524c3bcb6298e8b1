"""Errors across the session: an exception into an error answer, an error answer into one.

Separate from :mod:`isoplug.rpc.peer` because both directions are pure functions of their
input, used by the peer's calling side (the exception a caller gets), its dispatcher (the
answer a failed handler sends) and the host (:mod:`isoplug.host.calls` raises the same
exceptions for the errors a runner reports about plugin calls). It is where the other side's
texts are capped and sanitized on their way into an exception message.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType
from typing import Final

from isoplug.errors import REMOTE_ERROR_BY_CODE, RemoteError
from isoplug.stdlib_paths import in_stdlib
from isoplug.wire import ErrorInfo
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, clean_block, clean_text, cut_mark

__all__ = [
    "EXIT_REQUESTS",
    "error_info",
    "exception_message",
    "exit_request_text",
    "qualified_name",
    "remote_error",
    "traceback_text",
]

#: Caps for the other side's texts in the exception this side raises (each goes through
#: :func:`~isoplug.wire.sanitize.clean_text` first).
MAX_REMOTE_TYPE_CHARS: Final = 300
MAX_REMOTE_MESSAGE_CHARS: Final = 4 * 1024
MAX_REMOTE_TRACEBACK_CHARS: Final = 64 * 1024
#: Traceback text sent with an error response is capped so that a deep recursion error does
#: not produce a frame the size of the limit.
_MAX_TRACEBACK_CHARS = 64 * 1024
#: The message sent with an error response: no more than the other side shows (a 20 MB
#: message made an answer too large for a frame, and lost the exception's type).
MAX_SENT_MESSAGE_CHARS: Final = MAX_REMOTE_MESSAGE_CHARS
#: Exceptions that ask the whole process to end (``sys.exit()``, ``raise KeyboardInterrupt``).
#: Raised by code that runs for one caller (a plugin's method or event handler, a host's
#: capability), they fail that call, not the process: argparse-style code calls
#: ``sys.exit(2)`` on bad input.
EXIT_REQUESTS: Final = (SystemExit, KeyboardInterrupt)


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


def exception_message(exc: BaseException, limit: int = MAX_SENT_MESSAGE_CHARS) -> str:
    """``str(exc)``, whatever its ``__str__`` does, at most ``limit`` characters (and the mark
    of the cut, which the other side keeps), and encodable (lone surrogates escaped)."""
    try:
        text = str(exc)
    except Exception as failure:
        try:
            why = f"{type(failure).__name__}: {str(failure)[:limit]}"
        except Exception:
            why = type(failure).__name__
        text = f"<str() of {type(exc).__name__} raised {why}>"
    return _sendable(text, limit)


def exit_request_text(exc: BaseException, limit: int = MAX_SENT_MESSAGE_CHARS) -> str:
    """An :data:`EXIT_REQUESTS` exception named in a message: ``SystemExit: 2``,
    ``KeyboardInterrupt``."""
    message = exception_message(exc, limit)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


#: Where isoplug's own modules are: with the standard library's, the frames that run a
#: plugin's code (the dispatcher, the session, asyncio, a worker thread), not the plugin's.
_ISOPLUG_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


def _is_own(filename: str) -> bool:
    return filename.startswith(_ISOPLUG_FOLDER) or in_stdlib(filename)


def _past_own_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first frame that is neither isoplug's nor the standard library's (where
    the code isoplug ran begins: a plugin's method, ``setup``, ``on_config``); the whole of
    ``tb`` when it has none (a failure of isoplug itself keeps all its frames)."""
    walker = tb
    while walker is not None:
        if not _is_own(walker.tb_frame.f_code.co_filename):
            return walker
        walker = walker.tb_next
    return tb


def _all_own(tb: TracebackType | None) -> bool:
    while tb is not None:
        if not _is_own(tb.tb_frame.f_code.co_filename):
            return False
        tb = tb.tb_next
    return True


def traceback_text(exc: BaseException, limit: int = _MAX_TRACEBACK_CHARS) -> str:
    """The traceback of ``exc`` as Python prints it, from the first frame of the code isoplug
    ran (the frames that called it are isoplug's, the same for every failure; the exceptions
    chained to it are whole); its middle cut (and said so, with the count) past ``limit``
    characters: a deep recursion, a huge message or note."""
    frames = _past_own_frames(exc.__traceback__)
    if isinstance(exc, SyntaxError) and frames is exc.__traceback__ and _all_own(frames):
        # A plugin's file that does not compile, imported by isoplug: importlib's frames and
        # isoplug's say nothing. Python prints such an error as its file, line and caret.
        frames = None
    try:
        text = "".join(traceback.format_exception(type(exc), exc, frames))
    except Exception as failure:
        # format_exception copes with a failing __str__; a failing __getattr__ may still bite.
        return f"<formatting the traceback of {type(exc).__name__} raised {type(failure).__name__}>"
    if len(text) > limit:
        half = limit // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n{cut_mark(cut, where=IN_EMITTING_PROCESS)}\n{text[-half:]}"
    return _sendable(text, len(text))


def _sendable(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + cut_mark(len(text) - limit, where=IN_EMITTING_PROCESS)
    if not text.isascii():
        # A lone surrogate (a file name that is not UTF-8) cannot be encoded: the answer
        # would not be sent at all.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def error_info(code: str, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """The error answer that tells the other side about ``exc``, traceback included, unless
    ``with_traceback`` is False or the exception says its traceback is private
    (``traceback_is_private``)."""
    message = exception_message(exc)
    if not with_traceback or getattr(exc, "traceback_is_private", False):
        return ErrorInfo(code=code, type=qualified_name(type(exc)), message=message)
    return ErrorInfo(
        code=code, type=qualified_name(type(exc)), message=message, traceback=traceback_text(exc)
    )
