"""A runner's end at a stop: its plugins' ``teardown()`` and what they leave, all within
``teardown_timeout``, while log forwarding still works (:func:`tear_down`).

In order: the calls being served and the event handlers running are cancelled and waited for;
the plugins' ``teardown()`` run, each in a task of its own, all at once (in a group, one that
awaits until the deadline used to leave the members after it no time); the tasks the plugins
left are ended (:mod:`isoplug.runner.leftover_tasks`), their threads waited for
(:mod:`isoplug.runner.leftover_threads`) and their ``atexit`` hooks run
(:mod:`isoplug.runner.exit_hooks`); log forwarding ends last.

Every ``teardown()`` still running at the deadline is named in an ERROR on the plugin's logger,
with the line of the plugin's code it is at (its innermost frame in the plugin's folder, as a
``setup()`` not ready in time is named: see :mod:`isoplug.runner.setup_where`):

- one that awaits (the event loop is free): the loop notes where it waits, cancels it, and
  the stop goes on;
- one that blocks the event loop (a plain ``def`` teardown runs on the loop; an ``async`` one
  may call something that blocks): the loop cannot act, so a thread of the runner watches the
  deadline (:class:`TeardownWatch`) and, past it, names the line the loop's thread is at and
  ends the process at once (as :func:`~isoplug.runner.leftover_tasks.exit_leaving` does): the
  rest of the stop (the other plugins' teardowns still running, their tasks, threads and
  ``atexit`` hooks) does not run. Without it, the runner held on until the host's SIGTERM,
  ``shutdown_timeout`` after the request, and nothing said where it was.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs.kept_forwarder import let_forwarding_close
from isoplug.logs.sources import attributed_to
from isoplug.rpc.remote_errors import EXIT_REQUESTS
from isoplug.runner.dispatch import LoadedPlugin, PluginTable, plugin_source
from isoplug.runner.exit_hooks import run_exit_hooks, run_thread_exit_callbacks
from isoplug.runner.kept_forwarding import (
    finish_reports,
    settle_loguru_at_exit,
    stop_watching_forwarding,
)
from isoplug.runner.leftover_tasks import (
    MIN_GRACE,
    end_plugin_tasks,
    exit_leaving,
    report_unretrieved_exceptions,
    where_waiting,
)
from isoplug.runner.leftover_threads import wait_for_plugin_threads
from isoplug.runner.own_threads import start_or_go_without
from isoplug.runner.plugin_frames import awaited_frames, describe_in_folder, thread_frames
from isoplug.runner.vital_fds import vital

__all__ = ["TeardownWatch", "tear_down"]

_log = guarded_logger("isoplug.runner")

#: How long the end waits for a restore of the forwarding handler to say what it did.
_REPORTS_WAIT = 1.0
#: How often the watch looks at the loop's thread once the deadline has passed, until the loop
#: has seen the deadline itself (it is not blocked then) or the teardowns are over.
_WATCH_POLL = 0.05


async def tear_down(
    table: PluginTable,
    sources: frozenset[str],
    folders: Mapping[str, str],
    timeout: float,
    exit_code: int,
) -> bool:
    """End the runner's plugins as the module docstring says, all within ``timeout``
    (``folders``: each plugin's folder, by id; ``sources``: the plugins' task sources);
    failures, and what would not end, are logged. Return True if a task or a thread had not
    ended by then, or a worker thread still runs a call: the process must exit without
    waiting for it. A ``teardown()`` blocking
    the event loop past the deadline ends the process with ``exit_code``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if await _end_calls(table, deadline, timeout):
        await _run_teardowns(table, folders, deadline, timeout, exit_code)
    # After the hooks, which may stop them their own way; before forwarding ends, so that
    # what they log as they stop, or raise, arrives as their plugin's records.
    left_tasks = await end_plugin_tasks(sources, deadline)
    # Its idle threads end (they are no daemons: see isoplug.runner.workers).
    table.workers.shutdown()
    # As the interpreter does before it joins the threads: concurrent.futures ends the
    # threads of the executors nobody shut down (a process pool's manager thread).
    callbacks_left = await run_thread_exit_callbacks(deadline)
    # After the tasks, which may be what stops them; before forwarding ends, so that the
    # warning naming one arrives as a record.
    left_threads = await wait_for_plugin_threads(deadline)
    if callbacks_left and not left_threads:
        _log.warning(
            "threading's exit callbacks (concurrent.futures joining its executors' workers) "
            "had not returned by the teardown timeout; the runner exits without them"
        )
    # Last, as the interpreter runs them after the threads; before forwarding ends (the
    # hooks' own end it, logging.shutdown last), so that what they print or log arrives as
    # records. Not with a task or a thread left running: the process exits without them,
    # as it would without their hooks (a callback still running waits for such a thread).
    # Failed tasks a plugin keeps (self.task), which asyncio reports only once collected;
    # before the exit hooks, logging's among them.
    report_unretrieved_exceptions(loop)
    left = bool(left_tasks or left_threads or callbacks_left)
    stop_watching_forwarding()
    # Before the exit hooks, whose end (isoplug's own) closes the forwarding handler.
    finish_reports(_REPORTS_WAIT)
    # loguru's queues drained and its lost messages said after the plugins' hooks, which may
    # have added or removed its sinks after loguru's own hook ran (or it never runs).
    left_hooks = not left and await run_exit_hooks(deadline, settle_loguru_at_exit)
    _end_forwarding()
    # A worker still running a call (cancelled, or stuck since a timeout) is left behind, as
    # when workers were daemons: the interpreter would join it.
    return left or left_hooks or table.workers.busy()


def _end_forwarding() -> None:
    # A restore of the handler after the plugin's logging configuration says so in a record
    # of its own: before the handler closes for good (one an exit hook's configuration
    # started; or, when the runner skipped its exit hooks, one still on its way).
    finish_reports(_REPORTS_WAIT)
    let_forwarding_close()
    try:
        # Flushes the log forwarder: records logged during teardown reach the host.
        logging.shutdown()
    except Exception as exc:
        # Logging itself failed, so say it where the host still listens: the real stderr.
        print(f"isoplug runner: flushing logs failed: {exc!r}", file=sys.__stderr__, flush=True)


async def _end_calls(table: PluginTable, deadline: float, timeout: float) -> bool:
    """Cancel the calls being served and the event handlers running, and wait for them until
    ``deadline``; False if one had not ended by then (no time is left for the teardowns)."""
    cancelled = table.cancel_calls()
    if not cancelled:
        return True
    # A method may log (or clean up) as it is cancelled: while forwarding works.
    left = max(0.0, deadline - asyncio.get_running_loop().time())
    _, pending = await asyncio.wait(cancelled, timeout=left)
    if not pending:
        return True
    _log.error(
        "%d call(s) or event handler(s) cancelled at the shutdown had not ended within %g s "
        "(does one catch CancelledError and go on? one waits at %s); the plugins' teardown() "
        "not run; exiting anyway",
        len(pending),
        timeout,
        where_waiting(next(iter(pending))),
    )
    return False


async def _run_teardowns(
    table: PluginTable,
    folders: Mapping[str, str],
    deadline: float,
    timeout: float,
    exit_code: int,
) -> None:
    plugins = list(table.plugins.values())
    if not plugins:
        return
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline:
        _not_run([plugin.plugin_id for plugin in plugins], timeout)
        return
    watch = TeardownWatch(loop, deadline, timeout, exit_code)
    # One task per plugin, all under the one deadline: in a group, one teardown that awaits
    # until the deadline used to leave the members after it no time at all ("not run").
    # Started in the table's order, each runs up to its first await before the next begins.
    hooks: list[asyncio.Task[None]] = []
    try:
        for plugin in plugins:
            plugin_id = plugin.plugin_id
            with attributed_to(plugin_source(plugin_id)):
                hooks.append(
                    loop.create_task(
                        _tear_down_one(watch, plugin_id, folders.get(plugin_id, ""), plugin),
                        name=f"isoplug-teardown:{plugin_id}",
                    )
                )
        # A hook that shrugs off the cancel at the deadline is left to end_plugin_tasks, which
        # names it (it carries its plugin's source) and lets the runner exit without it.
        grace = max(0.0, deadline - loop.time()) + MIN_GRACE
        await asyncio.wait(hooks, timeout=grace)
    except asyncio.CancelledError:
        # The runner's task cancelled (it ends hard): the hooks go with it, as they did when
        # they ran in it.
        for hook in hooks:
            hook.cancel()
        raise
    finally:
        watch.close()


async def _tear_down_one(
    watch: TeardownWatch, plugin_id: str, folder: str, plugin: LoadedPlugin
) -> None:
    try:
        where = await watch.run(plugin_id, folder, plugin.instance)
    except (Exception, *EXIT_REQUESTS):
        # SystemExit too: the other plugins' teardowns and the flush still run.
        _log.exception("plugin %r: teardown() failed", plugin_id)
        return
    if where is not None:
        _log.error(
            "plugin %r: teardown() did not finish within %g s, waiting at %s "
            "(SupervisorConfig.teardown_timeout); cancelled: the runner stops without it",
            plugin_id,
            watch.timeout,
            where,
        )


def _not_run(plugin_ids: Collection[str], timeout: float) -> None:
    for plugin_id in plugin_ids:
        with attributed_to(plugin_source(plugin_id)):
            _log.error(
                "plugin %r: teardown() not run: the teardown timeout (%g s) had passed",
                plugin_id,
                timeout,
            )


@dataclass
class _Hook:
    """A ``teardown()`` running, in the task :meth:`TeardownWatch.run` runs in."""

    plugin_id: str
    folder: str
    task: asyncio.Task[Any]
    #: Where it waited when the deadline cancelled it (None: it was not).
    where: str | None = None


class TeardownWatch:
    """Bounds the ``teardown()`` hooks of one stop by ``deadline`` (the loop's time): see the
    module docstring. Made on the loop; each hook runs in a task of its own (:meth:`run`), all
    at once; :meth:`close` once they are over."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deadline: float, timeout: float, exit_code: int
    ) -> None:
        self.timeout = timeout
        self._exit_code = exit_code
        self._loop_thread = threading.get_ident()
        #: The hooks running, by the frame of :meth:`run` that runs each: the watch's thread
        #: finds which one blocks the loop by that frame on the loop's stack.
        self._hooks: dict[FrameType, _Hook] = {}
        #: Set on the loop at the deadline: the loop was free to see it.
        self._seen = False
        self._closed = threading.Event()
        self._handle = loop.call_at(deadline, self._expire)
        # The loop's clock may not be time.monotonic() (uvloop's is its own).
        at = time.monotonic() + (deadline - loop.time())
        self._thread = threading.Thread(
            target=self._watch, args=(at,), name="isoplug-teardown-watch", daemon=True
        )
        start_or_go_without(
            self._thread,
            "the teardown watch",
            "the teardowns run without it: one that blocks the event loop past the teardown "
            "timeout is not named, and ends at the host's SIGTERM",
        )

    async def run(self, plugin_id: str, folder: str, plugin: object) -> str | None:
        """Run ``plugin.teardown()`` (a plain def one here, on the loop) and await what it
        returns, until the deadline, in a task of its own; None if it finished in time, else
        where it waited (it was cancelled). The watch's thread finds this function on the
        loop's stack while the hook runs: it blocks the loop if it is there past the
        deadline."""
        task = asyncio.current_task()
        assert task is not None, "TeardownWatch.run runs in a task"
        frame = sys._getframe()
        hook = self._hooks[frame] = _Hook(plugin_id, folder, task)
        try:
            teardown: Callable[[], object] = plugin.teardown  # type: ignore[attr-defined]
            result = teardown()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            # Not the watch's cancel: the runner's (it ends hard) goes on.
            if hook.where is None:
                raise
            task.uncancel()
        finally:
            del self._hooks[frame]
        # Before the loop polls again: a teardown that closed the runner's own descriptors
        # below Python ends it, saying so (see isoplug.runner.vital_fds).
        vital.exit_if_lost()
        return hook.where

    def close(self) -> None:
        """The teardowns are over: the watch ends."""
        self._handle.cancel()
        self._closed.set()

    def _expire(self) -> None:
        """At the deadline, on the loop: every hook running now awaits; where, then cancel."""
        self._seen = True
        for hook in list(self._hooks.values()):
            hook.where = describe_in_folder(awaited_frames(hook.task), hook.folder)
            hook.task.cancel("the teardown timeout passed")

    def _watch(self, at: float) -> None:
        if self._closed.wait(max(0.0, at - time.monotonic())):
            return
        # Past the deadline: a loop that has not seen it yet is blocked, or starved of CPU
        # (then its thread is rarely in a hook, which it leaves at its first await).
        while not self._seen:
            frames = thread_frames(sys._current_frames().get(self._loop_thread))
            for frame in frames:
                hook = self._hooks.get(frame) if frame.f_code is _RUN_CODE else None
                if hook is not None:
                    self._end_blocked(hook, frames)
            if self._closed.wait(_WATCH_POLL):
                return

    def _end_blocked(self, hook: _Hook, frames: list[FrameType]) -> None:
        with attributed_to(plugin_source(hook.plugin_id)):
            _log.error(
                "plugin %r: teardown() did not finish within %g s, blocking the runner's event "
                "loop at %s (SupervisorConfig.teardown_timeout; a plain def teardown runs on "
                "the event loop); the runner exits now, without the rest of its stop",
                hook.plugin_id,
                self.timeout,
                describe_in_folder(frames, hook.folder),
            )
        try:
            _end_forwarding()
        finally:
            exit_leaving(self._exit_code)


#: What the watch's thread looks for on the loop's stack: a teardown hook running.
_RUN_CODE = TeardownWatch.run.__code__
