"""Python's other ways out of a program, as structured log records.

:func:`install_exception_hooks` replaces ``warnings.showwarning``, ``sys.excepthook``,
``threading.excepthook`` and ``sys.unraisablehook``; :func:`asyncio_exception_handler` is an
event loop's exception handler ("Task exception was never retrieved" and the like). What used to
be text on stderr becomes one record each:

- a warning: WARNING on ``py.warnings`` (like ``logging.captureWarnings``), located where the
  warning points (its file and line), with the extra ``category`` (``builtins.UserWarning``);
- an uncaught exception (main thread, another thread, an ignored one in ``__del__``, an event
  loop's): ERROR with ``exc_info``, so its traceback travels as a traceback, located where it
  was raised.

Each goes to the logger of the code it belongs to: ``<source>`` (``<source>.py.warnings``) when
:data:`~isoplug.logs.sources.current_source` names it, else the root logger (``py.warnings``).
For a task's exception, the source is the one the task was created with.

An uncaught exception is a crash report, not a logging call: in a program of its own its
traceback is printed on stderr whatever the levels its logging was given. So the level of the
logger it goes to (the root's, which a plugin's ``basicConfig(level=logging.CRITICAL)`` raises)
does not decide whether it is sent; the level of its source's stderr stream does
(``<source>.stderr``, else ``stderr``), as for a line written there: the level the host gives
the plugin, which the runner sets on those loggers. That holds for a task's exception too,
which plain asyncio logs on its ``asyncio`` logger, where a raised root level hides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Coroutine, Generator
from contextvars import Context
from types import CodeType, TracebackType
from typing import Any, TextIO

from isoplug.logs.output_records import deliver, output_enabled
from isoplug.logs.sources import current_source, source_of_code

__all__ = [
    "asyncio_exception_handler",
    "install_exception_hooks",
    "task_source",
    "track_task_sources",
]

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_original_showwarning = warnings.showwarning


def install_exception_hooks() -> None:
    """Make warnings and uncaught exceptions (every thread, ``__del__``) log records."""
    warnings.showwarning = _show_warning
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook


def _logger_for(suffix: str = "", source: str | None = None) -> logging.Logger:
    source = source if source is not None else current_source.get()
    if source:
        return logging.getLogger(f"{source}.{suffix}" if suffix else source)
    return logging.getLogger(suffix or None)


def _stderr_logger(source: str | None) -> logging.Logger:
    """The logger of the stderr stream of ``source`` (default: the current one), whose level
    decides whether a crash report is sent (see the module docstring)."""
    source = source if source is not None else current_source.get()
    return logging.getLogger(f"{source}.stderr" if source else "stderr")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<repr() of {type(value).__qualname__} failed: {type(exc).__name__}>"


def _type_name(kind: type[Any]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _raised_at(tb: TracebackType | None) -> tuple[str, int, str]:
    """(pathname, lineno, funcName) of the innermost frame of ``tb``."""
    if tb is None:
        return "", 0, ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_filename, tb.tb_lineno, code.co_name


def report_exception(
    message: str,
    exc_info: _ExcInfo | None,
    *,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Log ``message`` at ERROR with ``exc_info`` on the logger of ``source`` (default: the
    current one), located where the exception was raised, if the level of its stderr stream
    lets ERROR through (see the module docstring); False if that failed."""
    try:
        if not output_enabled(_stderr_logger(source), logging.ERROR):
            return True
        logger = _logger_for(source=source)
        pathname, lineno, func = _raised_at(exc_info[2] if exc_info else None)
        record = logger.makeRecord(
            logger.name, logging.ERROR, pathname, lineno, message, (), exc_info, func, extra
        )
        deliver(logger, record)
    except Exception:
        return False
    return True


# -- warnings ---------------------------------------------------------------------------------


def _show_warning(  # noqa: PLR0917 # warnings.showwarning's signature
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if file is not None:
        # Shown on a file the caller chose: as asked.
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    try:
        logger = _logger_for("py.warnings")
        if not output_enabled(logger, logging.WARNING):
            return
        record = logger.makeRecord(
            logger.name,
            logging.WARNING,
            filename,
            lineno,
            f"{category.__name__}: {message}",
            (),
            None,
            _function_at(filename, lineno),
            {"category": _type_name(category)},
        )
        deliver(logger, record)
    except Exception:
        _original_showwarning(message, category, filename, lineno, file, line)


def _function_at(filename: str, lineno: int) -> str | None:
    """The name of the function on the stack running ``filename``:``lineno``, if any (where a
    warning points: ``warn()``'s caller, or further up with ``stacklevel``)."""
    frame = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            break
        if frame.f_code.co_filename == filename and frame.f_lineno == lineno:
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return None


# -- uncaught exceptions ----------------------------------------------------------------------


def _excepthook(
    exc_type: type[BaseException], exc_value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt) or not report_exception(
        "Uncaught exception", (exc_type, exc_value, tb)
    ):
        sys.__excepthook__(exc_type, exc_value, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # what the default hook does: a thread may end itself so
    thread = args.thread
    name = thread.name if thread is not None else str(threading.get_ident())
    exc_value = args.exc_value if args.exc_value is not None else args.exc_type()
    if not report_exception(
        f"Exception in thread {name}", (args.exc_type, exc_value, args.exc_traceback)
    ):
        threading.__excepthook__(args)


def _unraisablehook(unraisable: Any) -> None:
    message = unraisable.err_msg or "Exception ignored in"
    if unraisable.object is not None:
        message = f"{message}: {_safe_repr(unraisable.object)}"
    exc_value = unraisable.exc_value
    exc_info: _ExcInfo | None = None
    if exc_value is not None:
        exc_info = (unraisable.exc_type, exc_value, unraisable.exc_traceback)
    elif unraisable.exc_type is not None:
        message = f"{message}: {unraisable.exc_type.__name__}"
    if not report_exception(message, exc_info, source=_home_of(unraisable)):
        sys.__unraisablehook__(unraisable)


def _home_of(unraisable: Any) -> str | None:
    """The source of the code that raised ``unraisable`` (a ``__del__``, a callback), by its
    file (see :func:`~isoplug.logs.sources.source_of_code`): a collection may run it during
    another plugin's work. None: the current source's."""
    try:
        # The object is the plugin's: its __getattr__ may raise anything.
        function = getattr(unraisable.object, "__func__", unraisable.object)
        code = getattr(function, "__code__", None)
    except Exception:
        code = None
    if isinstance(code, CodeType) and (source := source_of_code(code.co_filename)):
        return source
    tb = unraisable.exc_traceback
    while tb is not None:
        if source := source_of_code(tb.tb_frame.f_code.co_filename):
            return source
        tb = tb.tb_next
    return None


# -- asyncio ----------------------------------------------------------------------------------

#: Python 3.11 tasks do not expose their context: the source each was created with, noted by
#: the task factory :func:`track_task_sources` installs.
_task_sources: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = weakref.WeakKeyDictionary()


def track_task_sources(loop: asyncio.AbstractEventLoop) -> None:
    """Let :func:`asyncio_exception_handler` know whose a task is (Python 3.11 only: later
    tasks expose their context). Leaves a task factory the program set in place."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return
    loop.set_task_factory(_task_factory)


def _task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    context: Context | None = None,
) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, context=context)
    source = current_source.get() if context is None else context.get(current_source)
    if source is not None:
        _task_sources[task] = source
    return task


def task_source(future: Any) -> str | None:
    """The source (:data:`~isoplug.logs.sources.current_source`) of a task or future: the one
    its context holds, or on Python 3.11 the one it was created with (None: unknown)."""
    get_context = getattr(future, "get_context", None)
    if get_context is not None:
        with contextlib.suppress(Exception):
            source: str | None = get_context().get(current_source)
            return source
    with contextlib.suppress(TypeError):
        return _task_sources.get(future)
    return None


def asyncio_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event loop's exception handler (``loop.set_exception_handler``): one ERROR record,
    with the exception as ``exc_info`` and the context's other entries in the message, on the
    logger of the task or future concerned (else the current one)."""
    message = str(context.get("message") or "Unhandled exception in event loop")
    exception = context.get("exception")
    future = context.get("future") or context.get("task")
    source = task_source(future) if future is not None else None
    details = [message]
    for key, value in context.items():
        if key in ("message", "exception"):
            continue
        if key in ("source_traceback", "handle_traceback") and isinstance(value, list):
            text = "".join(traceback.format_list(value)).rstrip()
            details.append(f"{key} (most recent call last):\n{text}")
        else:
            details.append(f"{key}: {_safe_repr(value)}")
    exc_info: _ExcInfo | None = None
    if isinstance(exception, BaseException):
        exc_info = (type(exception), exception, exception.__traceback__)
    extra = {"task_name": future.get_name()} if isinstance(future, asyncio.Task) else None
    if not report_exception("\n".join(details), exc_info, source=source, extra=extra):
        loop.default_exception_handler(context)
