"""What the host makes of a runner's health reports: hung, slow for a reason, or stuck threads.

The runner's health thread answers with facts (:mod:`isoplug.runner.health`); this module
decides, for one runner process (:class:`HealthWatch`):

- **Hung**: its event loop has not run for ``health_timeout`` while Python could run (a plugin
  blocking the loop: ``time.sleep``, a pure-Python loop, a lock), or for ``health_timeout +
  health_grace`` in all; or no answer came within ``health_timeout + health_grace``. It is
  killed, and its exit account says which, and where the loop was.
- **GIL held**: while one call in C code holds the GIL (a 1 GiB allocation, a huge regex or
  JSON parse) no thread can run Python, the loop included. That time is not counted against
  the loop, up to ``health_grace``; a stall as long as ``health_timeout`` is reported (a
  WARNING, at most one a minute and then a summary), because it did stop everything.
- **Starved of CPU**: runners run below the host (:mod:`isoplug.runner.priority`), and on a
  busy machine one may wait seconds for a CPU. Time a runner was ready to run but waited for
  a CPU (:mod:`isoplug.cpu_wait`) counts neither toward ``health_timeout`` nor toward
  ``health_grace``: hung means it had the CPU for that long and still did not answer. The
  runner reports its loop's wait; when it does not answer, the host reads its threads' waits.
- **Waiting for the host to read**: a loop that writes to its stdout or stderr descriptor
  faster than the host reads (``os.write(1, ...)``, a C library's output, ``stdio = "pipe"``)
  waits in the write for the host (:mod:`isoplug.runner.output_wait`). While the host's reader
  of those pipes runs, that wait counts neither toward ``health_timeout`` nor toward
  ``health_grace``: a plugin is never killed for the host's slowness. A wait as long as
  ``health_timeout`` is reported (a WARNING, at most one a minute and then a summary).
- **The host not running**: time the host's own event loop did not run (the host stopped or
  frozen with its runners, or starved: :mod:`isoplug.host.host_pauses`) counts neither toward
  ``health_timeout`` nor toward ``health_grace``, nor in the GIL warning.
- **Stuck threads**: a sync call whose caller's timeout passed runs on in its worker thread.
  The host counts those threads per runner process; past ``max_stuck_threads`` it recycles the
  runner (a graceful stop, then a fresh one), its exit account saying why. A call's timeout
  error says what became of the call (:meth:`HealthWatch.explain_timeout`), as far as it is
  known: the runner's answer to the cancel (not started, or cancelled) and its health report
  (a worker thread running on, a blocked loop); never a guess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable

from isoplug.control import HealthReport, WorkerState
from isoplug.cpu_wait import longest_wait, process_cpu_waits
from isoplug.host.config import SupervisorConfig
from isoplug.host.descendants import read_stat
from isoplug.host.health_link import HealthLink
from isoplug.host.host_pauses import host_pauses
from isoplug.host.runner_events import RunnerEvents
from isoplug.log_guard import guarded_logger
from isoplug.logs.report_throttle import ReportThrottle, Tally
from isoplug.rpc.admission import NOT_STARTED_TYPE
from isoplug.wire import ErrorResponse
from isoplug.wire.sanitize import clean_text

__all__ = ["EXPLAIN_WAIT", "Finding", "HealthWatch", "health_tick"]

_log = guarded_logger("isoplug.host")

#: Cap for a text of the runner's (a method's name, where a thread is) quoted by the host.
_MAX_QUOTED = 300
#: Stuck calls named in a message at most.
_NAMED = 3
#: GIL stalls are reported at once, then in one summary per this many seconds.
_STALL_REPORT_INTERVAL = 60.0
#: Waiting for a CPU shorter than this is not mentioned in a verdict.
_WORTH_SAYING = 0.1
#: How long a call's timeout error waits for the runner to say what became of the call (at
#: most; within ``health_timeout``): its health thread answers in a millisecond when it can,
#: and so does its event loop, to the cancel, when the call ends on it. The whole wait is
#: spent only when neither answers (a plugin holding the GIL in C code).
EXPLAIN_WAIT = 1.0
#: Once the health report says the runner's loop runs, how much longer its answer to the
#: cancel may take, at least, and in round trips of that report: the cancel was sent before
#: the health query, so a method that ends when cancelled has answered within moments. Past
#: that the method shrugged the cancel off (it catches ``CancelledError`` and runs on), and
#: the caller is not kept waiting for an answer that is not coming.
_CANCEL_GRACE = 0.2
_CANCEL_GRACE_ROUND_TRIPS = 4


def health_tick(config: SupervisorConfig) -> float:
    """How often the runner stamps its heartbeat and checks the GIL: a tenth of the health
    timeout (so its reports are that precise), between 20 ms and 250 ms."""
    return min(0.25, max(0.02, config.health_timeout / 10))


@dataclasses.dataclass(frozen=True)
class Finding:
    """The outcome of one health check: ``kill`` (hung: why the host kills it, as its SIGKILL
    is noted; the exit account's reason is ``"killed by the host: "`` and this), ``recycle``
    (the reason), ``lost`` (the channel failed: why, sanitized; the runner is exiting, or
    a plugin closed it), or none of them; and when to check again."""

    recheck: float
    kill: str | None = None
    recycle: str | None = None
    lost: str | None = None


class HealthWatch:
    """Health checks of one runner process over its :class:`HealthLink`."""

    def __init__(self, runner_id: str, config: SupervisorConfig) -> None:
        self.runner_id = runner_id
        self.pid = 0
        self.link, self._theirs = HealthLink.pair()
        self._config = config
        #: Calls the host gave up on (timed out) that the runner may still run.
        self._timed_out: set[int] = set()
        #: The previous report's end (its ``until``): the GIL stalls that ended by then were
        #: reported already, so the next report counts only those that ended after it.
        self._since = 0.0
        #: Health reports received from this runner process (for tests and diagnostics).
        self.reports = 0
        self._stalls = ReportThrottle(_STALL_REPORT_INTERVAL)
        #: Set with the reason when a call's timeout finds too many stuck threads.
        self.recycle: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        #: The events of this runner process: sent, and handled or dropped as it told.
        self.events = RunnerEvents()
        #: Whether the host still reads the runner's stdout and stderr pipes (see start()).
        self._reading_output: Callable[[], bool] = _never
        #: When the host itself did not run: not counted against the runner.
        self._host_pauses = host_pauses()
        self._watching_pauses = False

    @property
    def runner_fd(self) -> int:
        """The runner's end of the channel, for it to inherit."""
        return self._theirs.fileno()

    async def start(self, pid: int, reading_output: Callable[[], bool] | None = None) -> None:
        """The runner ``pid`` was spawned with its end: let go of ours, start reading.
        ``reading_output`` says whether the host still reads its stdout and stderr: only then is
        the loop's wait in a write to them the host's slowness."""
        self.pid = pid
        self._reading_output = reading_output or _never
        self._theirs.close()
        if not self._watching_pauses:
            self._watching_pauses = True
            self._host_pauses.watch()
        await self.link.open()

    def close(self) -> None:
        self._theirs.close()
        self.link.close()
        self._stalls.close()
        if self._watching_pauses:
            self._watching_pauses = False
            self._host_pauses.unwatch()

    async def check(self) -> Finding:
        """One health check: the query, and what its answer (or its absence) means."""
        config = self._config
        limit = config.health_timeout + config.health_grace
        sent = time.monotonic()
        cpu_waits = process_cpu_waits(self.pid)
        report = await self.link.query(limit, since=self._since)
        while report is None:
            if self.link.failure is not None:
                return Finding(config.health_interval, lost=_quote(self.link.failure))
            now = time.monotonic()
            # The time the host did not run is no silence of the runner's.
            waited = now - sent - self._host_pauses.overlap(sent, now)
            starved = min(waited, longest_wait(cpu_waits, process_cpu_waits(self.pid)))
            if waited - starved >= limit:
                return Finding(config.health_interval, kill=self._silent(waited, starved))
            # Waiting for a CPU is not silence: ask again, for what is left of the limit.
            report = await self.link.query(
                max(health_tick(config), limit - (waited - starved)), since=self._since
            )
        self.reports += 1
        self.events.note_told(report.events_dropped, report.events_handled)
        until = report.until if report.until > 0 else time.monotonic()
        # What the host did not run for in the window this report covers is not the runner's
        # (the whole tree frozen: its loop "blocked" as long, its health thread no faster).
        host_out = self._host_pauses.overlap(self._since, until)
        # A runner that does not say when it answered (an older isoplug): the stalls that
        # ended after this query was sent may be reported again, never lost.
        self._since = report.until if report.until > 0 else sent
        self._report_stall(report, host_out)
        self._report_output_wait(report)
        blocked_out = self._host_pauses.overlap(until - _seconds(report.loop_blocked), until)
        finding = self._judge_loop(report, blocked_out)
        if finding.kill is None:
            stuck = self._stuck(report)
            if len(stuck) > config.max_stuck_threads:
                return dataclasses.replace(finding, recycle=self._recycle(stuck))
        return finding

    async def explain_timeout(
        self,
        plugin_id: str,
        method: str,
        call_id: int,
        timeout: float,
        late_answer: object = None,
    ) -> str:
        """Why the call ``call_id`` timed out after ``timeout`` seconds, as its error says it:
        asks the runner what became of it (``late_answer``: a task giving the runner's answer
        to the cancel the timeout sent, see :meth:`isoplug.rpc.Peer.request`); counts its
        thread if it runs on, and asks for a recycle past ``max_stuck_threads``."""
        self._timed_out.add(call_id)
        head = (
            f"plugin {plugin_id!r} did not answer {method!r}: the call timed out after "
            f"{timeout:.3g} s"
        )
        wait = min(self._config.health_timeout, EXPLAIN_WAIT)
        asked = time.monotonic()
        report = await self.link.query(wait)
        answer: object = None
        if isinstance(late_answer, asyncio.Task):
            answer = await _settle(late_answer, report, call_id, time.monotonic() - asked)
        said = _answered(answer)
        if report is not None:
            self.events.note_told(report.events_dropped, report.events_handled)
        if report is None:
            if said is not None:
                return f"{head}; {said}"
            return (
                f"{head}; a cancel was sent; the runner did not say whether the method still runs "
                f"(neither it nor its health thread answered within {wait:g} s)"
            )
        work = next((w for w in report.workers if w.call_id == call_id), None)
        if work is None:
            if said is not None:
                return f"{head}; {said}"
            blocked = _seconds(report.loop_blocked)
            if blocked < _WORTH_SAYING:
                return (
                    f"{head}; a cancel was sent; the method had not ended when the timeout was "
                    f"raised ({time.monotonic() - asked:.2g} s later)"
                )
            starved = min(blocked, _seconds(report.loop_starved))
            return (
                f"{head}; a cancel was sent; the method had not ended when the timeout was "
                f"raised: the runner's event loop has been blocked for {blocked:.1f} s"
                f"{_starved(starved)}{_waiting_output(self._output_wait(report))}"
                f"{_where(report.loop_where)}, and the cancel takes effect only once it runs "
                "again"
            )
        if not work.started:
            return (
                f"{head} before a worker thread was free to run it (all {report.threads} were "
                "busy); it will not run"
            )
        stuck = self._stuck(report)
        count = len(stuck)
        text = (
            f"{head}; its worker thread is still running {_quote(work.what)} ({count} "
            f"thread{'s' if count != 1 else ''} stuck{_where(work.where)})"
        )
        if count > self._config.max_stuck_threads:
            self._recycle(stuck)
            text += (
                f"; past max_stuck_threads ({self._config.max_stuck_threads}) the runner is "
                "recycled"
            )
        return text

    # -- deciding -------------------------------------------------------------------------------

    def _judge_loop(self, report: HealthReport, host_out: float = 0.0) -> Finding:
        """``host_out``: how long of the loop's blocked time the host did not run itself,
        given back (from each of the loop's times)."""
        config = self._config
        timeout, grace = config.health_timeout, config.health_grace
        blocked = max(0.0, _seconds(report.loop_blocked) - host_out)
        gil = min(blocked, max(0.0, _seconds(report.gil_held) - host_out))
        starved = min(blocked, max(0.0, _seconds(report.loop_starved) - host_out))
        waiting = min(blocked, max(0.0, self._output_wait(report) - host_out))
        # A whole process kept from the CPU shows as both: its health thread is late too.
        own = blocked - max(gil, starved, waiting)
        ran = blocked - max(starved, waiting)
        where = _where(report.loop_where)
        if own >= timeout:
            _log.error(
                "runner %s (pid %d) is hung: its event loop has not run for %.1f s, %.1f s of it "
                "while Python could run (health_timeout %g s)%s%s; killing it",
                self.runner_id,
                self.pid,
                blocked,
                own,
                timeout,
                _starved(starved),
                where,
            )
            return Finding(
                config.health_interval,
                kill=f"its event loop did not run for {blocked:.1f} s{_starved(starved)} "
                f"(hung{where})",
            )
        if ran >= timeout + grace:
            _log.error(
                "runner %s (pid %d) is hung: its event loop has not run for %.1f s, %.1f s of it "
                "with the GIL held (a long call in C code?), past health_timeout %g s + "
                "health_grace %g s%s%s; killing it",
                self.runner_id,
                self.pid,
                blocked,
                gil,
                timeout,
                grace,
                _starved(starved),
                where,
            )
            return Finding(
                config.health_interval,
                kill=f"its event loop did not run for {blocked:.1f} s, "
                f"{gil:.1f} s of it with the GIL held{_starved(starved)} (hung past "
                f"health_grace{where})",
            )
        recheck = config.health_interval
        if blocked > 0:
            # Look again when it would be hung if the loop stays blocked.
            due = min(timeout - own, timeout + grace - ran)
            recheck = min(recheck, max(health_tick(config), due))
        return Finding(recheck)

    def _silent(self, waited: float, starved: float) -> str:
        limit = self._config.health_timeout + self._config.health_grace
        within = f"{limit:g} s" if starved < _WORTH_SAYING else f"{waited:.1f} s{_starved(starved)}"
        stat = read_stat(self.pid)
        if stat is not None and stat.state in ("T", "t"):
            # Stopped, not hung: what the operator who stopped it needs to read.
            _log.error(
                "runner %s (pid %d) did not answer a health check within %s (health_timeout + "
                "health_grace): the process is stopped (SIGSTOP, or a debugger); killing it",
                self.runner_id,
                self.pid,
                within,
            )
            return (
                f"no answer to a health check within {within} (the process was stopped: "
                "SIGSTOP, or a debugger)"
            )
        _log.error(
            "runner %s (pid %d) did not answer a health check within %s (health_timeout + "
            "health_grace): no thread of it could run Python (the GIL held by a call in C code "
            "that does not return, or the process stopped); killing it",
            self.runner_id,
            self.pid,
            within,
        )
        return f"no answer to a health check within {within} (hung: no thread could run Python)"

    def _stuck(self, report: HealthReport) -> list[WorkerState]:
        """The threads running calls whose caller gave up; forgets calls that are over."""
        present = {w.call_id for w in report.workers}
        self._timed_out &= present
        return [
            w
            for w in report.workers
            if w.started and (w.abandoned or (w.call_id and w.call_id in self._timed_out))
        ]

    def _recycle(self, stuck: list[WorkerState]) -> str:
        """Ask for a recycle (said once per runner process); return the reason."""
        if self.recycle.done():
            return self.recycle.result()
        named = ", ".join(
            f"{_quote(w.what)} for {_seconds(w.seconds):.1f} s" for w in stuck[:_NAMED]
        ) + (f" and {len(stuck) - _NAMED} more" if len(stuck) > _NAMED else "")
        reason = (
            f"recycled by the host: {len(stuck)} worker threads still run calls that timed out "
            f"or were cancelled (max_stuck_threads {self._config.max_stuck_threads}): {named}"
        )
        _log.warning("runner %s (pid %d) is %s", self.runner_id, self.pid, reason)
        self.recycle.set_result(reason)
        return reason

    def _output_wait(self, report: HealthReport) -> float:
        """Of the loop's blocked time, how long it waited for the host to read its output;
        none once the host no longer reads it (then nothing will)."""
        waiting = min(_seconds(report.loop_blocked), _seconds(report.loop_waiting_output))
        return waiting if waiting and self._reading_output() else 0.0

    def _report_output_wait(self, report: HealthReport) -> None:
        self._report_long(
            "output",
            self._output_wait(report),
            lambda detail: (
                f"runner {self.runner_id} (pid {self.pid}): its event loop has waited {detail} "
                "for the host to read its stdout or stderr (a plugin writing to file descriptor "
                "1 or 2 faster than the host's log handlers take it); not counted as hung"
            ),
            lambda tally: (
                f"runner {self.runner_id}: {tally.events} more health check(s) in "
                f"{tally.seconds:.0f} s found its event loop waiting longer than health_timeout "
                f"for the host to read its stdout or stderr (latest {tally.detail})"
            ),
        )

    def _report_stall(self, report: HealthReport, host_out: float) -> None:
        config = self._config
        self._report_long(
            "gil",
            max(_seconds(report.longest_stall), _seconds(report.gil_wait)) - host_out,
            lambda detail: (
                f"runner {self.runner_id} (pid {self.pid}): no thread could run Python for "
                f"{detail} (the GIL was held, as by one long call in C code, or the process was "
                f"not scheduled); its health checks allow that for up to health_grace "
                f"({config.health_grace:g} s) beyond health_timeout ({config.health_timeout:g} s)"
            ),
            lambda tally: (
                f"runner {self.runner_id}: {tally.events} more time(s) in {tally.seconds:.0f} s, "
                f"no thread could run Python for longer than health_timeout (latest {tally.detail})"
            ),
        )

    def _report_long(
        self,
        kind: str,
        seconds: float,
        said: Callable[[str], str],
        summary: Callable[[Tally], str],
    ) -> None:
        """A WARNING that the runner went ``seconds`` (at least health_timeout) as ``said(how
        long)`` says; then at most one a minute, a ``summary`` of the others."""
        if seconds < self._config.health_timeout:
            return
        detail = f"{seconds:.1f} s"
        self._stalls.report(kind, said(detail), summary=summary, emit=_log.warning, detail=detail)


async def _settle(
    late_answer: asyncio.Task[object], report: HealthReport | None, call_id: int, asked: float
) -> object:
    """The runner's answer to a timed-out call's cancel (None: none), waited for only as long
    as one can still come: not when the health ``report`` (which took ``asked`` seconds) shows
    a worker thread running the call on, or the loop that would answer blocked."""
    if not late_answer.done() and report is not None:
        if _seconds(report.loop_blocked) >= _WORTH_SAYING or any(
            work.call_id == call_id for work in report.workers
        ):
            late_answer.cancel()
        else:
            grace = max(_CANCEL_GRACE, _CANCEL_GRACE_ROUND_TRIPS * asked)
            await asyncio.wait([late_answer], timeout=grace)
            late_answer.cancel()
    # No report: neither the health thread nor the loop answered; the late answer's own wait,
    # as long as the query's, ends about now.
    try:
        return await late_answer
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        return None


def _answered(answer: object) -> str | None:
    """What the runner's answer to a timed-out call, sent after its cancel, says of it (None:
    no answer came)."""
    if answer is None:
        return None
    if type(answer) is ErrorResponse and answer.error.code == "cancelled":
        if answer.error.type == NOT_STARTED_TYPE:
            return (
                f"the runner had not started it ({_quote(answer.error.message)}); it will not run"
            )
        return "a cancel was sent, and it was cancelled in the plugin"
    return "the method ended just after the timeout; its outcome was dropped"


def _starved(starved: float) -> str:
    """What a message adds for the time the runner waited for a CPU (nothing if negligible)."""
    return f", {starved:.1f} s of it waiting for a CPU" if starved >= _WORTH_SAYING else ""


def _waiting_output(waiting: float) -> str:
    """What a message adds for the time the runner waited for the host to read its output."""
    if waiting < _WORTH_SAYING:
        return ""
    return f", {waiting:.1f} s of it waiting for the host to read its stdout or stderr"


def _never() -> bool:
    return False


def _seconds(value: float) -> float:
    """A duration the runner reported, as a number the host can decide with."""
    return value if math.isfinite(value) and value > 0 else 0.0


def _quote(text: str) -> str:
    return clean_text(text, _MAX_QUOTED)


def _where(where: str) -> str:
    return f", in {_quote(where)}" if where else ""
