"""The runner's health thread: answers the host's health queries with facts, not silence.

A ping answered by the event loop tells the host one thing when it goes unanswered: the loop
did not run. It cannot say why: a plugin blocking the loop for good, or one call in C code
holding the GIL for a while (a 1 GiB allocation takes over a second), after which everything
runs on. Nor does it see the worker threads of sync methods, where a call the host gave up on
may run forever. So a thread of its own answers the host, over a socket pair the runner
inherits (:attr:`~isoplug.control.Bootstrap.health_fd`), with what it measured
(:class:`~isoplug.control.HealthReport`):

- **The loop's heartbeat.** The loop stamps ``time.monotonic()`` every tick (a timer
  callback); how long ago it last did, less a tick, is how long it has not run, at least.
- **The GIL.** The health thread wakes every tick (its read's timeout). Waking costs no GIL,
  but running Python afterwards needs it: when it comes back late, no thread could run Python
  meanwhile, so the GIL was held (a pure-Python loop gives it up every 5 ms; one long C call
  does not) or the process was not scheduled. Those stalls are kept (the last 256), so a report
  says how much of the loop's silence the GIL accounts for, even when no query was pending.
- **CPU starvation.** The loop's thread is timed by the clock; the kernel also says how long
  it was ready to run but waited for a CPU (:mod:`isoplug.cpu_wait`), as a runner below the
  host's priority does on a busy machine. That wait since the last beat is reported apart, so
  the host does not take a starved loop for a hung one. The kernel counts a wait once it
  ends; the wait under way is added, as the health thread sees it at its wake-ups (the loop's
  thread ready to run at one, and neither run nor given a CPU since). So is the rest of the
  time the loop's thread was neither on a CPU nor counted waiting, up to what the health
  thread waited for a CPU meanwhile: a loop running Python hands the GIL over to the health
  thread every tick and sleeps until that thread, starved too, has had a CPU to take it.
  Measured on 2 busy cores, those two made a loop that had run 16 ms of its 3.3 s seem to
  have run 0.5 s.
- **Waiting for the host to read.** A loop that writes to descriptor 1 or 2 (``os.write``, a C
  library's output, ``stdio = "pipe"``) faster than the host reads waits in that write for
  the host. The health thread looks at what the loop's thread does at every wake-up, and
  reports apart how long it waited so (:mod:`isoplug.runner.output_wait`), so the host does
  not take its own slowness for a hung plugin.
- **The worker pool.** Every sync call queued or running, since when, where its thread is, and
  whether its caller gave up on it (:mod:`isoplug.runner.workers`).

The host decides with these facts (:mod:`isoplug.host.health`). The thread ends when the host
closes its end; the heartbeat, with the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import sys
import threading
import time
from types import FrameType

import msgspec

from isoplug.control import Bootstrap, HealthQuery, HealthReport, WorkerState
from isoplug.cpu_wait import ThreadCpuWait
from isoplug.errors import RemoteProtocolError
from isoplug.log_guard import guarded_logger
from isoplug.runner import thread_sources
from isoplug.runner.output_wait import OutputWaits, ThreadOutputWait
from isoplug.runner.vital_fds import vital
from isoplug.runner.workers import WorkerPool, default_threads
from isoplug.stdlib_paths import in_stdlib
from isoplug.thread_limits import start_thread
from isoplug.transport.fd_identity import FdIdentity, detach_if_not_ours
from isoplug.wire import FrameDecoder

__all__ = ["HealthMonitor", "describe_frame", "frame_place", "loop_starvation", "start_health"]

_log = guarded_logger("isoplug.runner")

#: A query is a few dozen bytes.
_MAX_QUERY_BYTES = 4096
#: A stall shorter than this is scheduling noise, not worth keeping.
_MIN_STALL = 0.02
#: Stalls kept; at one a tick at most, far more than the seconds a report looks back.
_STALLS_KEPT = 256
#: Calls listed in one report at most (the oldest first).
_MAX_WORKERS = 64
#: Characters of a ``where`` text at most.
_MAX_WHERE = 300
#: A thread's time on a CPU and waiting for one (ns), and times given one (``ThreadCpuWait``).
_Times = tuple[int, int, int]
#: The wrappers that run a group member's threads as its own: never where a thread is.
_WRAPPERS = thread_sources.__file__


#: How long a runner waits at its start for its health thread to open its files.
THREAD_START_WAIT = 5.0


def start_health(bootstrap: Bootstrap) -> tuple[WorkerPool, HealthMonitor | None]:
    """The worker pool of the runner described by ``bootstrap``, and its health monitor,
    started (None without a health channel). Call on the event loop's thread."""
    # Threads stuck in abandoned calls, up to the host's limit, leave the usual capacity.
    workers = WorkerPool(default_threads() + max(0, bootstrap.max_stuck_threads))
    if bootstrap.health_fd < 0:
        return workers, None
    try:
        sock = socket.socket(fileno=bootstrap.health_fd)
    except OSError as exc:
        _log.error("no health channel (fd %d): %s", bootstrap.health_fd, exc)
        return workers, None
    # Inherited for this process only: programs the plugins start do not get it.
    sock.set_inheritable(False)
    monitor = HealthMonitor(sock, asyncio.get_running_loop(), workers, bootstrap.health_tick)
    monitor.start()
    return workers, monitor


class HealthMonitor:
    """Stamps the loop's heartbeat and answers health queries on ``sock`` from a thread."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        workers: WorkerPool,
        tick: float,
    ) -> None:
        self._sock = sock
        # The plugin may close this descriptor and reuse its number (see
        # isoplug.transport.fd_identity): its data must not be read, nor the number closed.
        self._identity = FdIdentity.of_socket(sock)
        self._loop = loop
        self._workers = workers
        self._tick = max(0.005, tick)
        self._loop_thread = threading.get_ident()
        self._loop_cpu_wait: ThreadCpuWait | None = None
        #: The health thread's own, opened by it.
        self._health_cpu_wait: ThreadCpuWait | None = None
        #: When the loop last ran (monotonic), how long its thread had run on a CPU and waited
        #: for one then, and how long the health thread had waited for one (ns; None:
        #: unknown): one tuple, so the health thread reads them all at once.
        self._last_beat: tuple[float, _Times | None, int | None] = (time.monotonic(), None, None)
        #: The loop's thread at this thread's last look (see :meth:`_look_at_loop`): its time
        #: on a CPU and times given one (None: not ready to run then), and since when it has
        #: been ready to run without either changing. Only the health thread uses them.
        self._loop_look: tuple[int, int] | None = None
        self._ready_since = 0.0
        #: Whether the loop's thread waits for the host to read its output (opened by it),
        #: and what the health thread's looks saw. Only the health thread uses the looks.
        self._loop_output: ThreadOutputWait | None = None
        self._output_waits = OutputWaits(_STALLS_KEPT)
        #: (start, end) of every stall kept, oldest first. Only the health thread uses it.
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=_STALLS_KEPT
        )
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(HealthQuery)
        #: Events dropped per plugin (``EventQueues.drop_counts``: set once the plugins' table
        #: exists), copied into every report.
        self.event_drops: dict[str, int] = {}
        #: Events handled per plugin (``EventQueues.handle_counts``), likewise.
        self.event_handles: dict[str, int] = {}
        self._thread = threading.Thread(target=self._serve, name="isoplug-health", daemon=True)
        # Set once the health thread has opened its files (see start()).
        self._files_opened = threading.Event()

    def start(self) -> None:
        """Start the heartbeat (call on the loop's thread) and the health thread, and wait
        for that thread's files to be open: they are the runner's, which a plugin's
        ``open_files`` limit counts beyond, so they must be open when the limit is applied
        (a thread that started late took one of the plugin's descriptors)."""
        self._loop_thread = threading.get_ident()
        self._loop_cpu_wait = ThreadCpuWait()
        self._loop_output = ThreadOutputWait()
        self._beat()
        self._sock.settimeout(self._tick)
        start_thread(self._thread, "the runner's health checks")
        if not self._files_opened.wait(THREAD_START_WAIT):
            _log.warning(
                "the health thread did not start within %.0f s; the plugins' open_files limit "
                "may count its descriptors",
                THREAD_START_WAIT,
            )

    def _beat(self) -> None:
        # On the loop's thread, between two polls: the last moment to exit cleanly if a
        # plugin's thread closed descriptors the loop polls (see isoplug.runner.vital_fds).
        vital.exit_if_lost()
        loop_cpu, health_cpu = self._loop_cpu_wait, self._health_cpu_wait
        self._last_beat = (
            time.monotonic(),
            None if loop_cpu is None else loop_cpu.times(),
            None if health_cpu is None else health_cpu.read(),
        )
        self._loop.call_later(self._tick, self._beat)

    def _serve(self) -> None:
        # Never closed, as the loop's: the loop's thread reads it at every beat.
        self._health_cpu_wait = ThreadCpuWait()
        self._files_opened.set()
        decoder = FrameDecoder(_MAX_QUERY_BYTES)
        try:
            while True:
                entered = time.monotonic()
                if not self._identity.holds():
                    # Closed with the runner's others, it exits saying which.
                    vital.exit_if_lost()
                    _log.error(
                        "the plugin closed the descriptor of the host's health channel; no "
                        "more health reports"
                    )
                    return
                try:
                    data: bytes | None = self._sock.recv(65536)
                except TimeoutError:
                    data = None
                now = time.monotonic()
                if data == b"":
                    return  # the host closed its end: this runner's life is over
                queries = [] if data is None else self._decode(decoder.receive_data(data))
                # When the thread was due to run Python again: the end of its read's timeout,
                # or when the first query was sent, if that came sooner.
                due = entered + self._tick
                if queries:
                    due = min(due, max(entered, min(q.sent for q in queries)))
                self._note_stall(due, now)
                loop_now, queued = self._look_at_loop(now)
                self._look_at_output(now)
                for query in queries:
                    self._answer(query, now, loop_now, queued)
        except RemoteProtocolError as exc:
            _log.error("the host's health channel sent a frame that is too large (%s); closed", exc)
        except OSError as exc:
            _log.error("the host's health channel failed: %s; no more health reports", exc)
        finally:
            # Its own close, from here: not the plugin's doing.
            vital.forget(self._identity.fd)
            detach_if_not_ours(self._sock, self._identity)
            # Our own socket: a failing close has nothing left to release or report.
            with contextlib.suppress(OSError):
                self._sock.close()

    def _decode(self, frames: list[bytes | memoryview]) -> list[HealthQuery]:
        queries = []
        for frame in frames:
            try:
                queries.append(self._decoder.decode(frame))
            except msgspec.DecodeError as exc:
                _log.error("ignored a malformed query on the host's health channel: %s", exc)
        return queries

    def _look_at_loop(self, now: float) -> tuple[_Times | None, float]:
        """The kernel's counts of the loop's thread now, and how long it has been waiting for
        a CPU in a wait the kernel has not counted yet, as far as this thread has seen: ready
        to run at an earlier look of this thread's, and neither run nor given a CPU since
        (a thread goes to sleep only by running). At least that long: it may have been
        waiting since just after the look before. This thread looks at every wake-up."""
        loop_cpu = self._loop_cpu_wait
        if loop_cpu is None:
            return None, 0.0
        # The state first: a thread given a CPU just after it was read shows in the counts.
        ready = loop_cpu.runnable()
        times = loop_cpu.times()
        if times is None or not ready:
            self._loop_look = None
            return times, 0.0
        look = (times[0], times[2])
        if look != self._loop_look:
            self._loop_look, self._ready_since = look, now
            return times, 0.0
        return times, now - self._ready_since

    def _look_at_output(self, now: float) -> None:
        output = self._loop_output
        if output is not None:
            self._output_waits.look(now, output.state())

    def _answer(
        self, query: HealthQuery, received: float, loop_now: _Times | None, queued: float
    ) -> None:
        now = time.monotonic()
        last_beat, loop_then, health_then = self._last_beat
        # At least this long: it may have stopped anywhere in the tick after its last beat.
        blocked = max(0.0, now - last_beat - self._tick)
        starved = waiting_output = 0.0
        ran = None
        if blocked and loop_then is not None and loop_now is not None:
            ran = max(0, loop_now[0] - loop_then[0]) / 1e9
            starved = loop_starvation(
                blocked,
                now - last_beat,
                ran=ran,
                waited=max(0, loop_now[1] - loop_then[1]) / 1e9,
                queued=queued,
                health_waited=self._health_waited(health_then),
            )
        if blocked:
            # The block started a tick after the last beat, at the latest.
            start = last_beat + self._tick
            waiting_output = min(blocked, self._output_waits.waited(start, now, self._tick, ran))
        frames = sys._current_frames()
        report = HealthReport(
            seq=query.seq,
            loop_blocked=blocked,
            gil_held=min(blocked, self._stalled_within(last_beat, now)) if blocked else 0.0,
            loop_where=describe_frame(frames.get(self._loop_thread)) if blocked else "",
            gil_wait=max(0.0, received - query.sent),
            longest_stall=max(
                (end - start for start, end in self._stalls if end > query.since), default=0.0
            ),
            workers=self._worker_states(now, frames),
            threads=self._workers.threads,
            max_threads=self._workers.max_threads,
            loop_starved=starved,
            until=now,
            loop_waiting_output=waiting_output,
            # One copy under the GIL: the loop's thread may add a plugin meanwhile.
            events_dropped=dict(self.event_drops),
            events_handled=dict(self.event_handles),
        )
        payload = self._encoder.encode(report)
        before = time.monotonic()
        # sendall releases the GIL, and another thread may keep it when it is given up (a
        # thread waiting for it takes it at once): the local socket takes a report at once,
        # so any time spent here is time no thread gave the GIL back.
        self._sock.sendall(len(payload).to_bytes(4, "big") + payload)
        self._note_stall(before, time.monotonic())

    def _health_waited(self, then: int | None) -> float:
        """Seconds this thread has waited for a CPU since it had waited ``then`` ns (0 if
        unknown): all of it, since it runs now."""
        health_cpu = self._health_cpu_wait
        now = None if health_cpu is None or then is None else health_cpu.read()
        return 0.0 if now is None or then is None else max(0, now - then) / 1e9

    def _note_stall(self, start: float, end: float) -> None:
        if end - start >= _MIN_STALL:
            self._stalls.append((start, end))

    def _stalled_within(self, start: float, end: float) -> float:
        return sum(
            max(0.0, min(end, stall_end) - max(start, stall_start))
            for stall_start, stall_end in self._stalls
        )

    def _worker_states(self, now: float, frames: dict[int, FrameType]) -> tuple[WorkerState, ...]:
        states = []
        for work in self._workers.snapshot()[:_MAX_WORKERS]:
            started = work.started
            states.append(
                WorkerState(
                    call_id=work.call_id,
                    what=work.what,
                    started=bool(started),
                    seconds=max(0.0, now - (started or work.queued)),
                    abandoned=work.abandoned,
                    where=describe_frame(frames.get(work.thread)) if started else "",
                )
            )
        return tuple(states)


def loop_starvation(
    blocked: float,
    since_beat: float,
    *,
    ran: float,
    waited: float,
    queued: float,
    health_waited: float,
) -> float:
    """Of ``blocked`` seconds, how long the loop's thread could not run for want of a CPU,
    given how long, in the ``since_beat`` seconds since its last beat, it ran on a CPU and
    waited for one (the kernel's counts), has been waiting in a wait not counted yet
    (``queued``), and the health thread waited for one: those waits, and the rest of its
    time neither on a CPU nor counted waiting up to the health thread's wait (see the module
    docstring). A loop that sleeps (a plugin's ``time.sleep``, a lock) while the health
    thread gets a CPU at once is the plugin's doing, and stays so."""
    neither = max(0.0, since_beat - ran - waited)
    queued = min(queued, neither)
    return min(blocked, waited + queued + min(neither - queued, health_waited))


def describe_frame(frame: FrameType | None) -> str:
    """``path:line in function`` of the innermost frame outside the standard library (a
    plugin's wait on an ``Event`` shows the plugin's line, not ``threading.py``) and
    :mod:`~isoplug.runner.thread_sources`, else of the innermost one."""
    if frame is None:
        return ""
    chosen = frame
    walker: FrameType | None = frame
    while walker is not None:
        filename = walker.f_code.co_filename
        if not in_stdlib(filename) and filename != _WRAPPERS:
            chosen = walker
            break
        walker = walker.f_back
    return frame_place(chosen)


def frame_place(frame: FrameType) -> str:
    """``path:line in function`` of ``frame`` itself, capped."""
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"[:_MAX_WHERE]
