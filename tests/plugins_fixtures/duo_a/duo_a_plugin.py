"""The test plugins of group 'duo': prints and logs in a call, an event, a task it started,
setup and teardown, a thread it started and an executor's; writes text as given (unfinished
lines, tracebacks), so that tests can interleave the members' output on the runner's one loop
thread.

One code serves both: ``duo_b/duo_b_plugin.py`` is a link to this file, imported under its own
module name, and each plugin says which one it is by its id.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import concurrent.futures
import contextvars
import gc
import logging
import sys
import threading
import traceback
from typing import Any

import isoplug

#: The usual module logger: named by the plugin, so the runner names its records for it.
_log = logging.getLogger(__name__)


class _FailsWhenFreed:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cycle: object = None

    def __del__(self) -> None:
        raise RuntimeError(f"{self.name} failed when freed")


class Duo(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.name = ctx.plugin_id
        self.tasks: set[asyncio.Task[None]] = set()
        _log.info("%s set up", self.name)

    async def teardown(self) -> None:
        _log.info("%s torn down", self.name)

    @isoplug.method
    async def speak(self) -> None:
        print(f"{self.name} in a call")

        async def later() -> None:
            await asyncio.sleep(0)
            print(f"{self.name} in a task")

        task = asyncio.get_running_loop().create_task(later())
        self.tasks.add(task)
        await task

    @isoplug.method
    def speak_in_thread(self) -> None:
        print(f"{self.name} in a worker thread")

    @isoplug.method
    async def speak_in_raw_thread(self) -> None:
        """A thread started with ``_thread.start_new_thread`` prints, then dies of an uncaught
        exception."""
        done = threading.Event()

        def run() -> None:
            try:
                print(f"{self.name} in a raw thread")
            finally:
                done.set()
            raise LookupError(f"{self.name} raw thread failed")

        _thread.start_new_thread(run, ())
        await asyncio.to_thread(done.wait)

    @isoplug.method
    async def speak_and_fail_in_own_thread(self) -> None:
        """A thread of the plugin's own prints, then dies of an uncaught exception."""

        def run() -> None:
            print(f"{self.name} in its own thread")
            raise LookupError(f"{self.name} thread failed")

        thread = threading.Thread(target=run)
        thread.start()
        await asyncio.to_thread(thread.join)

    @isoplug.method
    async def leave_threads(self) -> None:
        """A thread of its own and a pool's busy thread that never end (not daemons)."""
        forever = threading.Event()
        threading.Thread(target=forever.wait, name=f"{self.name}-forever").start()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.pool.submit(forever.wait)

    @isoplug.method
    async def leave_failing_garbage(self) -> None:
        """An object in a reference cycle whose ``__del__`` raises: only a collection frees
        it, maybe during another member's work."""
        failing = _FailsWhenFreed(self.name)
        failing.cycle = failing

    @isoplug.method
    async def collect_garbage(self) -> None:
        gc.collect()

    @isoplug.method
    async def fail_in_task(self) -> None:
        async def fail() -> None:
            raise LookupError(f"{self.name} task failed")

        # Waited for, not awaited: its exception stays unretrieved.
        await asyncio.wait([asyncio.get_running_loop().create_task(fail())])

    @isoplug.method
    async def log_everywhere(self) -> None:
        """Records on loggers the plugin names itself, wherever its code runs."""
        _log.info("%s logged in a call", self.name)
        logging.getLogger().info("%s logged on the root logger", self.name)
        logging.getLogger("shared.lib").info("%s logged in a shared library", self.name)

        async def later() -> None:
            await asyncio.sleep(0)
            _log.info("%s logged in a task", self.name)

        await asyncio.get_running_loop().create_task(later())
        await asyncio.to_thread(_log.info, "%s logged in to_thread", self.name)
        # A thread starts with no context; run_in_executor does not pass it on either.
        bare = threading.Thread(target=_log.info, args=("%s logged in a bare thread", self.name))
        bare.start()
        await asyncio.to_thread(bare.join)
        await asyncio.get_running_loop().run_in_executor(
            None, _log.info, "%s logged in run_in_executor", self.name
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(_log.info, "%s logged in its own executor", self.name).result()

    @isoplug.method
    async def register_exit_hooks(self) -> None:
        """atexit hooks that print, log and fail; and one that ``atexit.unregister`` takes
        back (as a plain interpreter would)."""
        name = self.name

        def talk() -> None:
            print(f"{name} atexit print")
            _log.error("%s atexit record", name)

        def fail() -> None:
            raise LookupError(f"{name} atexit hook failed")

        def taken_back() -> None:
            print(f"{name} unregistered hook ran")

        atexit.register(talk)
        atexit.register(fail)
        atexit.register(taken_back)
        atexit.unregister(taken_back)

    @isoplug.method
    async def register_blocking_exit_hook(self) -> None:
        """An atexit hook that waits for good: the runner exits without it."""

        def block() -> None:
            threading.Event().wait()

        atexit.register(block)

    @isoplug.method
    def log_in_worker(self) -> None:
        _log.info("%s logged in a worker thread", self.name)

    @isoplug.method
    async def log_with_loguru_and_structlog(self) -> None:
        import structlog
        from loguru import logger

        logger.info(f"{self.name} logged with loguru")
        # Both plugins of the group configure the process's structlog alike.
        structlog.configure(
            processors=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
        structlog.get_logger(__name__).info(f"{self.name} logged with structlog", order=7)

    @isoplug.method
    async def log_as(self, logger: str, text: str, claim: str | None = None) -> None:
        """A record on the logger ``logger``, its ``plugin_id`` extra ``claim`` (if given), in
        a call and in a thread that no plugin's code is known to have started (as one a C
        library starts: this one starts from an empty context)."""
        extra = {"plugin_id": claim} if claim is not None else None
        logging.getLogger(logger).warning("%s in a call", text, extra=extra)
        bare = threading.Thread(
            target=logging.getLogger(logger).warning,
            args=("%s in a thread of nobody's", text),
            kwargs={"extra": extra},
        )
        contextvars.Context().run(bare.start)
        await asyncio.to_thread(bare.join)

    @isoplug.method
    async def write(self, text: str, stream: str = "stdout") -> None:
        """``text`` written as is, on the loop's thread: no newline is added."""
        getattr(sys, stream).write(text)

    @isoplug.method
    async def flush(self, stream: str = "stdout") -> None:
        getattr(sys, stream).flush()

    @isoplug.on_event("write")
    async def on_write(self, payload: dict[str, str]) -> None:
        """Writes the text the payload has for this plugin, as is, to stdout."""
        sys.stdout.write(payload.get(self.name, ""))

    @isoplug.on_event("print_error")
    async def on_print_error(self, payload: Any) -> None:
        """Writes a traceback of its own to stderr, as a formatted text (``print_exc()`` would
        flush it: it would not be held for a chained one)."""
        try:
            raise ValueError(f"{self.name} failed")
        except ValueError:
            sys.stderr.write(traceback.format_exc())

    @isoplug.on_event("chat")
    async def on_chat(self, payload: Any) -> None:
        print(f"{self.name} in an event", file=sys.stderr)
        _log.info("%s logged in an event", self.name)
