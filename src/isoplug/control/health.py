"""The health channel's messages (see :mod:`isoplug.control`, which re-exports them): a socket
pair between the host and a thread of the runner that answers even while the runner's event
loop is blocked. Frames as on the wire (uint32 big-endian length + payload), each a
msgpack-encoded :class:`HealthQuery` (host -> runner) or :class:`HealthReport`.
"""

from __future__ import annotations

import msgspec

__all__ = ["HealthQuery", "HealthReport", "WorkerState"]


class HealthQuery(msgspec.Struct, frozen=True, array_like=True):
    """The host asks how the runner is; answered by a :class:`HealthReport` with its ``seq``."""

    seq: int
    #: ``time.monotonic()`` of the host when it sent this (the same clock in both processes):
    #: how long the query waited before a thread of the runner could run Python to read it.
    sent: float
    #: Report the longest time no thread could run Python among the stalls that ended after
    #: this moment (host clock): the previous report's ``until``, so none is reported twice.
    since: float = 0.0


class WorkerState(msgspec.Struct, frozen=True, array_like=True):
    """One sync call (or event delivery) in the runner's worker pool."""

    #: The :attr:`~isoplug.control.CallRequest.call_id` (0: an event delivery).
    call_id: int
    #: ``plugin.method``, or what the thread runs.
    what: str
    #: True once a thread runs it; False while it waits for a free thread.
    started: bool
    #: Seconds it has run (started) or waited for a thread (not started).
    seconds: float
    #: Its caller is gone (the host's call timed out, or was cancelled) while it ran on.
    abandoned: bool = False
    #: Where its thread is: ``path:line in function``.
    where: str = ""


class HealthReport(msgspec.Struct, frozen=True, array_like=True):
    """What the runner's health thread saw when a :class:`HealthQuery` arrived."""

    seq: int
    #: How long the runner's event loop has not run, at least (0: it runs).
    loop_blocked: float = 0.0
    #: Of ``loop_blocked``, how long no thread could run Python at all: the GIL was held
    #: (one long call in C code, such as a huge allocation) or the process was not scheduled.
    gil_held: float = 0.0
    #: Where the event loop's thread is while it is blocked: ``path:line in function``.
    loop_where: str = ""
    #: How long the query itself waited before the health thread could run Python.
    gil_wait: float = 0.0
    #: The longest time no thread could run Python in a stall that ended after the query's
    #: ``since`` (and by ``until``).
    longest_stall: float = 0.0
    #: Calls in the worker pool (running or waiting), oldest first, at most 64.
    workers: tuple[WorkerState, ...] = ()
    #: Worker threads in the pool, and the most it starts.
    threads: int = 0
    max_threads: int = 0
    #: Of ``loop_blocked``, how long the loop's thread was ready to run but waited for a CPU
    #: (the kernel's ``run_delay``, and the wait under way, which it counts only once it
    #: ends; 0 where unknown), and how long it was otherwise neither on a CPU nor waiting, up
    #: to the health thread's own wait meanwhile (a GIL hand-over to that thread, starved
    #: too): a starved loop, not a hung one.
    loop_starved: float = 0.0
    #: ``time.monotonic()`` of the runner when it answered: every stall that ``longest_stall``
    #: counted ended by then, so the next query's ``since`` (0: the runner did not say).
    until: float = 0.0
    #: Events each plugin dropped so far, its queue full (``max_queued_events``): plugin id ->
    #: count, plugins that dropped none left out (an older runner: none).
    events_dropped: dict[str, int] = {}
    #: Of ``loop_blocked``, how long the loop's thread waited in a write to its stdout or
    #: stderr pipe for the host to read (see :mod:`isoplug.runner.output_wait`): the host's
    #: slowness, not a hung loop (0 where unknown).
    loop_waiting_output: float = 0.0
    #: Events a handler of each plugin took so far (plugin id -> count, as
    #: ``events_dropped``): what the host, which counts what it sent, counts as delivered
    #: should the runner end without its last word (:data:`~isoplug.control.EVENT_COUNTS`).
    events_handled: dict[str, int] = {}
