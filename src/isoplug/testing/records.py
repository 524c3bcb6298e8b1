"""Log records kept for a test, with waits on conditions.

:class:`Records` is a :class:`logging.Handler` that keeps every record it is handed, untouched,
and lets a test wait, on its event loop, until a condition holds: records may arrive in any
thread (a host replays plugin records on its event loop, a standalone receiver in its own
threads). :func:`watching` puts one on a logger for a block; :func:`attached` does the same
with any handler; :func:`eventually` waits for state that no record announces.

Plugin records arrive on the host as ``plugin.<id>.<logger>`` (its ``logging`` records, at
their level) and ``plugin.<id>.stdout`` / ``plugin.<id>.stderr`` (its printed lines);
:meth:`Records.select` picks them by plugin, logger, level or stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from isoplug.errors import WaitTimeout

__all__ = ["Records", "attached", "eventually", "watching"]

#: A failing test's report shows the test's line and the error, not these helpers' source.
__tracebackhide__ = True

T = TypeVar("T")
H = TypeVar("H", bound=logging.Handler)

#: The streams of a plugin's output, as the last part of their logger's name.
STREAMS = ("stdout", "stderr")


class Records(logging.Handler):
    """Keeps every log record it is handed (in :attr:`records`), and lets a test wait (on the
    event loop) until a condition holds.

    Two waits for a record: :meth:`wait_for_record` returns the first that fits of all those
    kept, whenever it came (the same one each time); :meth:`take_record` returns each record
    once, so that each of its waits needs a record of its own. :meth:`clear` forgets what came
    so far."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        # What take_record() returned, by id(): held, so that no other record gets that id.
        self._taken: dict[int, logging.LogRecord] = {}
        self._changed = asyncio.Event()
        # The loop a test waits on; records may be handled in other threads (a receiver's).
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        loop = self._loop
        if loop is None:
            return  # nobody waits yet; wait_until() looks at the records before it waits
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wake()
            return
        with contextlib.suppress(RuntimeError):  # the test's loop is already closed
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def matching(self, logger: str, text: str = "") -> list[logging.LogRecord]:
        """The records of exactly the logger ``logger`` whose message contains ``text``."""
        return [r for r in self.records if r.name == logger and text in r.getMessage()]

    def select(
        self,
        *,
        plugin: str | None = None,
        logger: str | None = None,
        level: int | str | None = None,
        stream: str | None = None,
        text: str = "",
    ) -> list[logging.LogRecord]:
        """The records that fit every criterion given.

        - ``plugin``: from that plugin (its loggers ``plugin.<id>...``);
        - ``logger``: of that logger or below it (``"plugin.greeter"`` includes
          ``"plugin.greeter.stdout"``); with ``plugin``, relative to the plugin's
          (``logger="greeter"`` is the plugin's logger ``greeter``);
        - ``level``: at this level or above (``logging.WARNING`` or ``"WARNING"``);
        - ``stream``: ``"stdout"`` or ``"stderr"``, the plugin's printed lines;
        - ``text``: in the formatted message.
        """
        if stream is not None and stream not in STREAMS:
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        minimum = _level_number(level)
        prefix = f"plugin.{plugin}" if plugin is not None else None
        if logger is not None:
            prefix = f"{prefix}.{logger}" if prefix is not None else logger
        return [
            r
            for r in self.records
            if (prefix is None or r.name == prefix or r.name.startswith(prefix + "."))
            and (minimum is None or r.levelno >= minimum)
            and (stream is None or r.name.rpartition(".")[2] == stream)
            and text in r.getMessage()
        ]

    def clear(self) -> None:
        """Forget every record kept so far, as pytest's ``caplog.clear()``: :meth:`select` and
        the waits see only the records that arrive after it. A record on its way (logged by a
        plugin before, replayed into the host's logging after) arrives after it all the same:
        to be sure an earlier action's record is not taken for a later one's, take it first."""
        self.records.clear()
        self._taken.clear()

    def messages(self) -> list[str]:
        """The formatted message of every record, in order."""
        return [r.getMessage() for r in self.records]

    async def wait_for(
        self, logger: str, text: str = "", timeout: float = 20.0
    ) -> logging.LogRecord:
        """The first record of exactly ``logger`` containing ``text``, once there is one."""
        return await self.wait_until(lambda: next(iter(self.matching(logger, text)), None), timeout)

    async def wait_for_record(
        self,
        *,
        plugin: str | None = None,
        logger: str | None = None,
        level: int | str | None = None,
        stream: str | None = None,
        text: str = "",
        timeout: float = 20.0,
    ) -> logging.LogRecord:
        """The first record that fits (as :meth:`select` picks) of all those kept, once there
        is one, whether or not a wait returned it before; raises ``WaitTimeout`` after
        ``timeout`` seconds, listing what did arrive."""
        criteria = {"plugin": plugin, "logger": logger, "level": level, "stream": stream}
        return await self._wait_for_fitting(criteria, text, timeout, taking=False)

    async def take_record(
        self,
        *,
        plugin: str | None = None,
        logger: str | None = None,
        level: int | str | None = None,
        stream: str | None = None,
        text: str = "",
        timeout: float = 20.0,
    ) -> logging.LogRecord:
        """The earliest record that fits (as :meth:`select` picks) and that no earlier
        ``take_record`` returned, once there is one. Each record is taken once: three waits
        for ``text="greeting Ada"`` need three such records, whatever order records of
        different kinds arrive in (a plugin's log records and its printed lines travel apart).
        Raises ``WaitTimeout`` after ``timeout`` seconds, listing what did arrive and
        how many records that fit were taken before."""
        criteria = {"plugin": plugin, "logger": logger, "level": level, "stream": stream}
        record = await self._wait_for_fitting(criteria, text, timeout, taking=True)
        self._taken[id(record)] = record
        return record

    async def _wait_for_fitting(
        self, criteria: dict[str, Any], text: str, timeout: float, *, taking: bool
    ) -> logging.LogRecord:
        def first_fitting() -> logging.LogRecord | None:
            fitting = self.select(**criteria, text=text)
            if taking:
                return next((r for r in fitting if id(r) not in self._taken), None)
            return next(iter(fitting), None)

        try:
            return await self.wait_until(first_fitting, timeout)
        except TimeoutError:
            wanted = {**criteria, "text": text or None}
            given = ", ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not None)
            returned = 0
            if taking:
                returned = sum(id(r) in self._taken for r in self.select(**criteria, text=text))
            # A wait that fails because the only fitting record was returned already says so.
            besides = (
                f" besides the {returned} returned by earlier waits (each is returned once)"
                if returned
                else ""
            )
            seen = "\n".join(
                f"  {r.name} {r.levelname}: {r.getMessage()}" for r in self.records[-20:]
            )
            raise WaitTimeout(
                f"no record with {given or 'any attribute'} within {timeout:g} s{besides}; the "
                f"last of {len(self.records)} record(s) seen:\n{seen or '  (none)'}"
            ) from None

    async def wait_until(self, find: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Wait until ``find()`` returns something true (a record, ``True``); return it.

        ``find`` is called now and after each new record; raises ``WaitTimeout`` after
        ``timeout`` seconds.
        """
        self._loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                found = find()
                if found:
                    return found
                await changed.wait()


def _level_number(level: int | str | None) -> int | None:
    if level is None or isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown logging level {level!r}")
    return number


@contextlib.contextmanager
def attached(handler: H, name: str | None = None, *, propagate: bool = True) -> Iterator[H]:
    """``handler`` on the logger ``name`` (None: the root logger), which is set to DEBUG (and
    not to propagate, if so asked) for the block; its handlers, level and propagation are as
    they were afterwards."""
    logger = logging.getLogger(name)
    level, was_propagating = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    if not propagate:
        logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if not propagate:
            logger.propagate = was_propagating


@contextlib.contextmanager
def watching(name: str | None = None, *, propagate: bool = True) -> Iterator[Records]:
    """A :class:`Records` on the logger ``name``, as :func:`attached` puts it."""
    with attached(Records(), name, propagate=propagate) as records:
        yield records


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds, for state no record announces (a connection's end in
    another thread); checked every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
