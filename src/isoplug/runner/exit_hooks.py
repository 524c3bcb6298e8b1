"""The plugins' ``atexit`` hooks, run while log forwarding still works and within the
teardown's deadline.

Python runs ``atexit`` hooks at interpreter exit, after the runner has returned: log forwarding
had ended by then, so what a hook printed or logged reached the host as the forwarding
handler's stderr fallback, every line a WARNING on ``plugin.<id>.stderr`` with its level,
logger and stream folded into the text; and a hook that blocked held the runner until the
host's SIGTERM. So the runner runs the interpreter's exit sequence itself, once the teardown
hooks ran and the plugins' tasks ended, and before log forwarding ends, in the interpreter's
order:

1. ``threading``'s exit callbacks, newest first (:func:`run_thread_exit_callbacks`):
   ``concurrent.futures`` joins the workers of the executors nobody shut down (a
   ``ProcessPoolExecutor``'s manager thread, which would otherwise be waited for as a
   lingering thread, and whose processes must be gone before ``multiprocessing``'s hook joins
   the process's children);
2. the non-daemon threads are waited for (:mod:`isoplug.runner.leftover_threads`);
3. the ``atexit`` hooks, newest first (:func:`run_exit_hooks`): those registered after
   :func:`mark_plugin_hooks`' marker (the plugins' own and their libraries', ``multiprocessing``'s
   among them), bounded by the deadline, and after them, within it, loguru's ``enqueue=True``
   sinks drained (:func:`~isoplug.runner.kept_forwarding.settle_loguru_at_exit`: loguru's own
   hook may have run before a hook added such a sink, or not at all); then isoplug's own,
   which bound themselves: the
   standard streams' flush (:mod:`isoplug.logs.redirect`), the forwarding handler's close,
   and ``logging.shutdown()`` last (registered first). Not when a task or a thread was left
   running: the runner then exits at once, without its hooks, as before.

What the hooks print, log or write is a record with its own level, logger and stream, as at
any other time, and of the plugin whose code registered the hook (in a group, that member:
:func:`mark_plugin_hooks` makes ``atexit.register`` remember the
:data:`~isoplug.logs.sources.current_source` it was called with, as a task or ``to_thread``
does, and so does a thread a member's code started: see
:mod:`isoplug.runner.thread_sources`; a hook registered where no plugin's code is known stays
the group's), and a SIGKILL meanwhile loses none of it (the records are in the forwarding
handler's ring, as during the teardown hooks). Each callback list is emptied as it runs, so
nothing runs twice when the interpreter exits.

They run in a daemon thread of their own, so that the event loop goes on (the goodbye to the
host follows them) and a hook that blocks can be left behind: one still running at the
teardown's deadline (:data:`~isoplug.runner.leftover_tasks.MIN_GRACE` at least) is named in a
WARNING (the function registered, ``multiprocessing.util._exit_function`` or the plugin's own,
never isoplug's wrapper that calls it) with the line it is at (:func:`running_hook`), and the
runner exits without it, as for a task or a thread that would not end
(:func:`~isoplug.runner.leftover_tasks.exit_leaving`). A hook that needs
the main thread (``signal.signal``) raises there; its exception is reported as Python reports
any hook's (``sys.unraisablehook``: an ERROR record).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs.sources import attributed_to, current_source
from isoplug.runner.health import describe_frame, frame_place
from isoplug.runner.leftover_tasks import MIN_GRACE
from isoplug.runner.leftover_threads import function_name
from isoplug.runner.own_threads import start_or_go_without
from isoplug.runner.plugin_frames import thread_frames
from isoplug.stdlib_paths import in_stdlib

__all__ = [
    "RunningHook",
    "mark_plugin_hooks",
    "run_exit_hooks",
    "run_thread_exit_callbacks",
    "running_hook",
]

_log = guarded_logger("isoplug.runner")

_THREAD_NAME = "isoplug-atexit"

#: Called by the hook :func:`mark_plugin_hooks` registers, once every hook registered after
#: it (the plugins') has run.
_notify: list[Callable[[], object]] = []


def _plugin_hooks_ran() -> None:
    # The last plugin hook's attribution ends here: isoplug's own hooks run after this one.
    current_source.set(None)
    for notify in _notify:
        notify()


def mark_plugin_hooks() -> None:
    """Register the hook that marks the end of the plugins' hooks: call it before any plugin
    code runs. ``atexit`` runs hooks newest first, so it runs after every hook a plugin (or a
    library it imports) registers, and before isoplug's own and ``logging.shutdown()``.
    From then on, a hook runs as the code that registered it (see :class:`_AttributedHook`)."""
    atexit.register(_plugin_hooks_ran)
    if atexit.register is not _register_attributed:
        atexit.register = _register_attributed


_atexit_register = atexit.register


def _register_attributed(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``atexit.register``, remembering whose code registers the hook."""
    _atexit_register(_AttributedHook(current_source.get(), func, args, kwargs))
    return func


class _AttributedHook:
    """An ``atexit`` hook that runs with the :data:`current_source` it was registered with
    (None: no plugin's). It equals the function it runs, so ``atexit.unregister(func)``
    finds it, and has its repr, so a failure's report names that function."""

    def __init__(
        self,
        source: str | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.source = source
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def __call__(self) -> None:
        # Set, and not reset on the way out: atexit reports a hook's exception after it
        # returns, and that report is the same plugin's. The next hook sets its own; the
        # marker hook clears it before isoplug's own run.
        current_source.set(self.source)
        self.func(*self.args, **self.kwargs)

    def __eq__(self, other: object) -> bool:
        return other is self or bool(self.func == other)

    def __hash__(self) -> int:
        return hash(self.func)

    def __repr__(self) -> str:
        return repr(self.func)


async def run_thread_exit_callbacks(deadline: float) -> bool:
    """Run ``threading``'s exit callbacks (``concurrent.futures``' joins: they end the threads
    of the executors nobody shut down) until ``deadline`` (the loop's time;
    :data:`MIN_GRACE` at least); True if they had not returned by then. Call it before
    waiting for the threads, which names what they wait for (a busy executor thread)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    _start(_run_threading_exit_callbacks, loop, done)
    await asyncio.wait({done}, timeout=_time_left(loop, deadline))
    return not done.done()


async def run_exit_hooks(
    deadline: float, after_plugin_hooks: Callable[[], object] = lambda: None
) -> bool:
    """Run the ``atexit`` hooks as the module docstring says: the plugins' until ``deadline``
    (the loop's time; :data:`MIN_GRACE` at least), then isoplug's own and ``logging``'s (they
    bound themselves). ``after_plugin_hooks`` runs in the hooks' thread between the two,
    within the deadline (it may wait for what the plugins' hooks left: loguru's queues).
    True if the plugins' had not all returned by the deadline (named in a WARNING: the
    process must exit without waiting)."""
    loop = asyncio.get_running_loop()
    plugins_done: asyncio.Future[None] = loop.create_future()
    all_done: asyncio.Future[None] = loop.create_future()

    def plugin_hooks_ran() -> None:
        try:
            after_plugin_hooks()
        finally:
            _settle_from_thread(loop, (plugins_done,))

    _notify[:] = [plugin_hooks_ran]
    # Runs every hook (one that raises goes to sys.unraisablehook, and the next one runs),
    # then empties the list: the interpreter finds nothing left to run.
    thread = _start(atexit._run_exitfuncs, loop, all_done, plugins_done)
    await asyncio.wait({plugins_done}, timeout=_time_left(loop, deadline))
    if not plugins_done.done():
        hook = running_hook(sys._current_frames().get(thread.ident or 0))
        with attributed_to(hook.source) if hook.source else contextlib.nullcontext():
            _log.warning(
                "an atexit hook (%s) had not returned by the teardown timeout; it is at %s; "
                "the runner exits without it (and without the hooks registered before it)",
                hook.name,
                hook.where or "an unknown place",
            )
        return True
    await all_done
    return False


def _time_left(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    return max(deadline - loop.time(), MIN_GRACE)


def _settle(futures: tuple[asyncio.Future[None], ...]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _settle_from_thread(
    loop: asyncio.AbstractEventLoop, futures: tuple[asyncio.Future[None], ...]
) -> None:
    """Settle ``futures`` on ``loop``, from another thread: all in one callback, as the
    teardown may go on, and the loop close, as soon as the first is settled (a second
    call_soon_threadsafe then raised in the hooks' thread, an ERROR after forwarding ended)."""
    try:
        loop.call_soon_threadsafe(_settle, futures)
    except RuntimeError:
        if not loop.is_closed():
            raise
        # The runner stopped waiting (its deadline passed) and has ended its loop: nothing
        # waits for these any more.


def _start(
    work: Callable[[], None], loop: asyncio.AbstractEventLoop, *done: asyncio.Future[None]
) -> threading.Thread:
    """Run ``work`` in a daemon thread of its own (one that blocks can be left behind), which
    settles ``done`` when it returns."""
    thread = threading.Thread(
        target=_run_and_settle, args=(work, loop, done), name=_THREAD_NAME, daemon=True
    )
    instead = "they run on the event loop's thread, with no deadline but the host's SIGTERM"
    if not start_or_go_without(thread, "exit hooks", instead):
        _run_and_settle(work, loop, done)
    return thread


def _run_and_settle(
    work: Callable[[], None],
    loop: asyncio.AbstractEventLoop,
    done: tuple[asyncio.Future[None], ...],
) -> None:
    # A function of the module's own, not a closure: running_hook() finds the hook's frames
    # as those its code calls (through atexit's C code, which leaves no frame).
    try:
        work()
    finally:
        _settle_from_thread(loop, done)


class RunningHook:
    """The ``atexit`` hook the hooks' thread runs: its name, where it is, and whose code
    registered it (None: unknown, or no plugin's)."""

    def __init__(self, name: str, where: str, source: str | None) -> None:
        self.name = name
        self.where = where
        self.source = source


def running_hook(innermost: FrameType | None) -> RunningHook:
    """The hook the hooks' thread, whose current frame is ``innermost``, is running: what the
    user registered, never isoplug's :class:`_AttributedHook` around it, and where in it that
    thread is (see :func:`_where`)."""
    frames = thread_frames(innermost)
    for index, frame in enumerate(frames):
        if frame.f_code is _run_and_settle.__code__:
            frames = frames[index + 1 :]
            break
    else:
        # Deeper than thread_frames follows (a recursion): which hook it is, is lost.
        return RunningHook("an unknown hook", _where(frames), None)
    if not frames:
        return RunningHook("an unknown hook", "", None)
    top = frames[0]
    if top.f_code is _AttributedHook.__call__.__code__:
        # Read once, under the GIL: the frame's locals as they are now.
        wrapper = top.f_locals.get("self")
        if isinstance(wrapper, _AttributedHook):
            func = wrapper.func
            if isinstance(func, functools.partial):
                func = func.func
            return RunningHook(function_name(func), _where(frames[1:]), wrapper.source)
    # Registered past atexit.register's wrapper (its function taken before the runner set
    # it): the hook is the function of the first frame atexit's C code called.
    module = top.f_globals.get("__name__")
    qualname = top.f_code.co_qualname
    return RunningHook(f"{module}.{qualname}" if module else qualname, _where(frames), None)


def _where(frames: list[FrameType]) -> str:
    """``path:line in function`` in a hook's ``frames`` (outermost first, the hook's own
    first): of the innermost outside the standard library (a plugin's hook that waits on an
    ``Event`` shows the plugin's line, not ``threading.py``); of the innermost when the hook
    is the standard library's (``multiprocessing``'s join of a child: its wait is the line,
    there being none of the plugin's); "" for none (a hook in C code)."""
    if not frames:
        return ""
    if in_stdlib(frames[0].f_code.co_filename):
        return frame_place(frames[-1])
    # The hook's own frame is outside the standard library: the walk stops there at most.
    return describe_frame(frames[-1])


def _run_threading_exit_callbacks() -> None:
    """What ``threading._shutdown()`` calls before joining the threads (CPython's
    ``threading._register_atexit``: ``concurrent.futures``' joins), newest first, each once."""
    callbacks: list[Callable[[], object]] | None = getattr(threading, "_threading_atexits", None)
    while callbacks:
        callback = callbacks.pop()
        try:
            callback()
        except Exception:
            # As the interpreter would at exit: reported, and the next one runs.
            _log.exception("a threading exit callback (%r) failed at exit", callback)
