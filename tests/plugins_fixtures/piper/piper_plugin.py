"""A test plugin that chose ``stdio = "pipe"``: its print() goes to the runner's pipes through
the C text streams, and the host makes the records."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
import warnings
from typing import Any

import isoplug


def _stream(name: str) -> Any:
    return sys.stdout if name == "stdout" else sys.stderr


class Piper(isoplug.Plugin):
    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def streams(self) -> list[Any]:
        """What sys.stdout and sys.stderr are here: type name, line buffering, fd."""
        return [
            [type(s).__name__, getattr(s, "line_buffering", None), s.fileno()]
            for s in (sys.stdout, sys.stderr)
        ]

    @isoplug.method
    async def say(self, text: str, stream: str = "stdout", end: str = "\n") -> None:
        print(text, file=_stream(stream), end=end)

    @isoplug.method
    async def from_threads(self, threads: int, lines: int, width: int = 0) -> None:
        """``threads`` threads each printing ``lines`` lines made of several print() arguments
        (one of ``width`` characters, when given), all at once."""
        start = threading.Barrier(threads)
        filler = "x" * width

        def work(number: int) -> None:
            start.wait()
            for line in range(lines):
                if width:
                    print("thread", number, "line", line, filler, "end", sep=" ")
                else:
                    print("thread", number, "line", line, "end", sep=" ")

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    @isoplug.method
    async def flood(self, count: int) -> float:
        """``count`` print()s at full speed; the seconds they took."""
        started = time.perf_counter()
        for number in range(count):
            print("flood", number)
        return time.perf_counter() - started

    @isoplug.method
    async def print_traceback(self) -> None:
        try:
            raise ValueError("printed boom")
        except ValueError:
            traceback.print_exc()
        print("after the traceback", file=sys.stderr)

    @isoplug.method
    async def log_and_warn(self) -> None:
        logging.getLogger(__name__).info("logged, not printed")
        warnings.warn("a warning, not printed", UserWarning, stacklevel=1)

    @isoplug.method
    async def last_words(self, how: str) -> None:
        print("no newline yet", end="")
        if how == "abort":
            os.abort()
        os._exit(3)
