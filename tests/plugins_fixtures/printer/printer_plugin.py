"""A test plugin that prints, warns and fails in every Python-level way, on request.

Its module-level names (``where``) give the line numbers the tests expect records to carry.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import json
import os
import sys
import threading
import traceback
import warnings
from typing import Any

import isoplug

#: The line of each write in say_all(), as the records should give it.
LINES: dict[str, int] = {}


def _here(name: str) -> None:
    LINES[name] = sys._getframe(1).f_lineno + 1


class Printer(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.background: set[asyncio.Task[None]] = set()
        self.quoting_started = threading.Event()

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def say_all(self) -> dict[str, int]:
        """One line through each of print, sys.stdout.write, sys.stderr.write and
        sys.stdout.buffer.write; return the line number of each call."""
        _here("print")
        print("printed line")
        _here("stdout")
        sys.stdout.write("written to stdout\n")
        _here("stderr")
        sys.stderr.write("written to stderr\n")
        _here("buffer")
        sys.stdout.buffer.write("bytes to stdout \xe9\n".encode() + b"bad \xff\n")
        return dict(LINES)

    @isoplug.method
    async def stream_api(self) -> dict[str, Any]:
        """What a plugin may ask of sys.stdout."""
        out = sys.stdout
        written = out.write("api line\n")
        out.writelines(["lines 1\n", "lines 2\n"])
        out.flush()
        out.buffer.flush()
        return {
            "written": written,
            "fileno": out.fileno(),
            "err_fileno": sys.stderr.fileno(),
            "isatty": out.isatty(),
            "encoding": out.encoding,
            "errors": out.errors,
        }

    @isoplug.method
    async def structured_stderr(self) -> None:
        print(
            json.dumps({"level": "error", "message": "disk full", "disk": "sda"}), file=sys.stderr
        )
        print("ERROR: prefixed trouble", file=sys.stderr)
        empty: dict[str, int] = {}
        try:
            empty["missing"]
        except KeyError:
            traceback.print_exc()

    @isoplug.method
    async def print_chained_traceback(self) -> str:
        """traceback.print_exc() of a chained exception raised through a recursion, its
        message of two lines and a note; returns what it printed."""

        def descend(depth: int) -> None:
            if depth == 0:
                int("not a number")
            descend(depth - 1)

        try:
            try:
                descend(6)
            except ValueError as exc:
                error = LookupError("no parser for\nthis input")
                error.add_note("tried: int")
                raise error from exc
        except LookupError:
            text = traceback.format_exc()
            traceback.print_exc()
        return text

    @isoplug.method
    def threads(self, threads: int, lines: int) -> None:
        """``threads`` threads print ``lines`` lines each, every line in three writes."""
        start = threading.Barrier(threads)

        def run(index: int) -> None:
            start.wait()
            for number in range(lines):
                sys.stdout.write(f"thread {index} ")
                sys.stdout.write(f"line {number} ")
                print("." * (number % 50) + "end")

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    @isoplug.method
    def filtered_and_renamed(self) -> None:
        """Lines printed from one place while the thread is renamed and while a filter on
        the stdout logger hides some: each must arrive as its own record would."""
        import logging

        thread = threading.current_thread()
        original = thread.name
        for name in ("first-name", "second-name"):
            thread.name = name
            print(f"printed by {name}")
        thread.name = original

        class Hide(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                return "hidden" not in record.getMessage()

        stdout_logger = logging.getLogger("plugin.printer.stdout")
        hide = Hide()
        stdout_logger.addFilter(hide)
        try:
            for text in ("hidden line", "shown while filtered"):
                print(text)
        finally:
            stdout_logger.removeFilter(hide)
        print("hidden no more")

    @isoplug.method
    async def partial_line(self, text: str) -> None:
        sys.stdout.write(text)

    @isoplug.method
    async def warn(self) -> int:
        line = sys._getframe().f_lineno + 1
        warnings.warn("this is deprecated", FutureWarning, stacklevel=1)
        return line

    @isoplug.method
    async def thread_raises(self) -> None:
        def fail() -> None:
            raise RuntimeError("thread failed")

        worker = threading.Thread(target=fail, name="doomed")
        worker.start()
        worker.join()

    @isoplug.method
    async def unraisable(self) -> None:
        class Broken:
            def __del__(self) -> None:
                raise ValueError("del failed")

        Broken()
        gc.collect()

    @isoplug.method
    async def task_exception(self) -> None:
        async def fail() -> None:
            raise LookupError("nobody awaited me")

        task = asyncio.get_running_loop().create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task
        gc.collect()

    @isoplug.method
    async def kept_task_fails(self) -> None:
        """A task kept on the plugin fails; nobody looks at it (asyncio reports it only once
        the task is collected)."""

        async def fail() -> None:
            raise LookupError("kept, never awaited")

        self.kept = asyncio.get_running_loop().create_task(fail())
        while not self.kept.done():
            await asyncio.sleep(0)

    @isoplug.method
    async def loguru(self) -> None:
        from loguru import logger

        logger.info("loguru info")
        logger.success("loguru success")
        logger.bind(user=42).warning("loguru bound")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("loguru exception")

    @isoplug.method
    async def loguru_enqueued(self) -> None:
        """loguru set up for threads and processes: its sink writes in loguru's own thread."""
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, enqueue=True, level="DEBUG")
        logger.bind(user=7).warning("queued warning")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("queued exception")
        await asyncio.to_thread(logger.complete)

    @isoplug.method
    async def flood(self, count: int) -> int:
        """``count`` lines ``flood <n>``, yielding to the loop every 500 lines."""
        for number in range(count):
            print(f"flood {number}")
            if number % 500 == 499:
                await asyncio.sleep(0)
        return count

    @isoplug.method
    def quote_fatal(self) -> int:
        """Print a line that looks like a crash dump's first, five ordinary lines, then more
        lines every millisecond until :meth:`stop_quoting` (the stream never goes quiet);
        return how many more."""
        self.quoting = threading.Event()
        self.quoting_started.set()
        print("Fatal Python error: quoted")
        for number in range(1, 6):
            print(f"ordinary {number}")
        more = 0
        # Bounded: a test that never stops it does not leave a runner printing forever.
        while more < 60_000 and not self.quoting.wait(0.001):
            more += 1
            print(f"more {more}")
        return more

    @isoplug.method
    async def stop_quoting(self) -> None:
        await asyncio.to_thread(self.quoting_started.wait, 30)
        self.quoting.set()

    @isoplug.method
    async def read_stdin(self) -> dict[str, Any]:
        """What a plugin gets from stdin: the end of input, as without a terminal."""
        try:
            input("a prompt> ")
            prompt = "answered"
        except EOFError as exc:
            prompt = f"EOFError: {exc}"
        original = sys.__stdin__
        return {
            "read": sys.stdin.read(),
            "input": prompt,
            "isatty": sys.stdin.isatty(),
            "original_isatty": original.isatty() if original is not None else None,
        }

    @isoplug.method
    async def progress(self) -> None:
        """Progress shown the ways tools show it: updates after a CR, no newline between."""
        for percent in (0, 50, 100):  # tqdm: each update flushed, a newline at the end
            sys.stderr.write(f"\rbar {percent}%")
            sys.stderr.flush()
        sys.stderr.write("\n")
        for step in range(1, 4):  # print(..., end="\r"), nothing flushed
            print(f"step {step}", end="\r")
        print("steps done")
        os.write(2, b"\rfd 1\rfd 2")  # a C library's (curl's) meter, on the real fd
        os.write(2, b"\rfd 3\n")
        # A status frame a CR ends, then a message at WARNING said over it.
        sys.stderr.write("status 20%\r")
        sys.stderr.write("WARNING: disk almost full\n")
        os.write(2, b"\rfd 4")
        os.write(2, b"\rWARNING:root:fd warning\n")
        # tqdm's nested bar (leave=False): a cursor-up flushed, "" written, blanks clearing.
        for text in ("\rinner 50%", "\x1b[A", "", "\n", "\r" + " " * 20, "\x1b[A"):
            sys.stderr.write(text)
            if text:
                sys.stderr.flush()
        os.write(2, b"\r" + b" " * 20 + b"\x1b[A\rfd 5\n")
        # Said over a bar, at a level of its own; then a plain stderr line, at its own.
        sys.stderr.write("\rERROR: the bar broke\nplain stderr line\n")
        os.write(2, b"\rERROR: the fd meter broke\nplain fd line\n")

    @isoplug.method
    async def segfault(self) -> None:
        faulthandler._sigsegv()  # type: ignore[attr-defined] # a real SIGSEGV, for tests
