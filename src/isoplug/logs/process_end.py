"""Closing the forwarding handlers at the end of a process that ``multiprocessing`` started.

Such a process ends with ``os._exit()``, which runs no ``atexit`` hook: only
``multiprocessing``'s own exit finalizers, and the last steps of ``BaseProcess._bootstrap``
(the traceback of a target that raised, the join of its non-daemon threads, the flush of the
standard streams). :func:`close_all_at_exit` makes the handlers close after all of them.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable

__all__ = ["close_all_at_exit"]

#: Where multiprocessing's exit runs our close, where it is a finalizer: after its own
#: finalizers (priority >= 0) and after it has joined the process's children.
_EXIT_PRIORITY = -100

#: The process in which the finalizer is registered (a fork inherits the parent's number).
_finalizer_in = [0]


class _AfterFork:
    """What multiprocessing's after-fork registry holds (weakly) for us."""


_after_fork_token = _AfterFork()


def close_all_at_exit(close_all: Callable[[], None], *, forked: bool) -> None:
    """Make ``close_all`` run at the normal end of a process that ``multiprocessing`` started.

    Such a process ends with ``os._exit()``, which runs no ``atexit`` hook, only
    multiprocessing's own finalizers: without one of ours, every pool worker that ends
    normally left its log connection without a goodbye, and the receiver warned of a crash.
    ``forked``: called in a child right after ``os.fork()``; if multiprocessing forked it,
    its bootstrap clears the finalizers it inherited and then runs its after-fork hooks, so
    the finalizer is registered from one of those. Otherwise called when a handler is made:
    in a process of multiprocessing's (a pool initializer's handler, any start method) it is
    registered at once. Nothing is imported: a program that never loaded multiprocessing has
    no such process.
    """
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    if forked:
        util.register_after_fork(_after_fork_token, lambda _: _register(util, close_all))
        return
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        _register(util, close_all)


def _register(util: types.ModuleType, close_all: Callable[[], None]) -> None:
    if _finalizer_in[0] == os.getpid():
        return
    _finalizer_in[0] = os.getpid()
    bootstrap = _process_bootstrap()
    if bootstrap is not None and _close_at_last_flush(util, bootstrap, close_all):
        util.Finalize(None, _unless_within(bootstrap, close_all), exitpriority=_EXIT_PRIORITY)
        return
    util.Finalize(None, close_all, exitpriority=_EXIT_PRIORITY)


def _process_bootstrap() -> types.CodeType | None:
    """The code of ``multiprocessing``'s ``BaseProcess._bootstrap``: what a process it
    started runs, from its start to its last step."""
    process = sys.modules.get("multiprocessing.process")
    bootstrap = getattr(getattr(process, "BaseProcess", None), "_bootstrap", None)
    code = getattr(bootstrap, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def _close_at_last_flush(
    util: types.ModuleType, bootstrap: types.CodeType, close_all: Callable[[], None]
) -> bool:
    """Make ``close_all`` run right after the last step of a process ``multiprocessing``
    started, its flush of the standard streams (``util._flush_std_streams()``, the end of
    ``BaseProcess._bootstrap``), rather than with its exit finalizers: those run before it
    prints the traceback of a target that raised (``Process ForkProcess-1:`` and the
    traceback, on stderr), and before it joins the process's non-daemon threads. Closed
    earlier, the handler took those last words to its stderr fallback, as WARNING text of
    the parent's, besides the host's reading of the same text: twice, neither as the child's.
    True if done (this Python's ``_bootstrap`` ends with that step)."""
    flush = getattr(util, "_flush_std_streams", None)
    if not callable(flush) or "_flush_std_streams" not in bootstrap.co_names:
        return False
    if getattr(flush, "_isoplug_closes", False):
        return True  # a fork of a process that did this: the same function closes here

    def flush_then_close() -> None:
        try:
            flush()
        finally:
            if sys._getframe(1).f_code is bootstrap:  # not Popen's, before it starts a child
                close_all()

    flush_then_close._isoplug_closes = True  # type: ignore[attr-defined]
    vars(util)["_flush_std_streams"] = flush_then_close
    return True


#: How far below ``BaseProcess._bootstrap`` a finalizer runs (_exit_function,
#: _run_finalizers, Finalize.__call__).
_FINALIZER_DEPTH = 5


def _unless_within(bootstrap: types.CodeType, close_all: Callable[[], None]) -> Callable[[], None]:
    """``close_all``, unless called from within ``bootstrap`` (whose last step closes: see
    :func:`_close_at_last_flush`): multiprocessing also runs its exit finalizers from
    ``atexit``, where nothing follows them."""

    def close_unless_within() -> None:
        frame: types.FrameType | None = sys._getframe(1)
        for _ in range(_FINALIZER_DEPTH):
            if frame is None:
                break
            if frame.f_code is bootstrap:
                return
            frame = frame.f_back
        close_all()

    return close_unless_within
