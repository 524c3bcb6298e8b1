"""A runner process's exit account, made from what its life saw: its status, who signalled
it, what it wrote on stderr last, the limit it passed, and whether restarting can help.

:class:`~isoplug.host.life.RunnerLife` drives the process; once it has exited, this says how
it ended (see :class:`~isoplug.host.status.ExitAccount`, docs/operations.md "Exit accounts").
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Awaitable, Callable, Sequence

from isoplug.control import EXIT_DESCRIPTORS_CLOSED, ReadyReport
from isoplug.host.exit_verdict import BEFORE_READY, explained_exit
from isoplug.host.interpreter_check import UNRUNNABLE
from isoplug.host.limits import LimitWatch
from isoplug.host.manifest import Manifest
from isoplug.host.process import EXIT_REPLAY_TIMEOUT, RunnerProcess
from isoplug.host.status import ENDED_BY_HOST, KILLED_BY_HOST, ExitAccount
from isoplug.host.stderr_tail import StderrTail, self_abort
from isoplug.off_loop import off_loop

__all__ = ["NOT_READY_WITHIN", "account_for_exit"]

#: How the host's reason for killing a runner not ready in time starts (after KILLED_BY_HOST).
NOT_READY_WITHIN = "not ready within "
_NOT_READY = f"{KILLED_BY_HOST}{NOT_READY_WITHIN}"
#: How long an account of an early exit waits, at most, for the stderr records the runner sent
#: on its log connection before it died to be replayed (they travel beside its pipes).
_LAST_WORDS_WAIT = 1.0


async def account_for_exit(
    process: RunnerProcess,
    reason: str,
    permanent: str | None,
    *,
    runner_id: str,
    restarts: int,
    entries: Sequence[Manifest],
    report: ReadyReport | None,
    tail: StderrTail,
    refused: str | None,
    refused_for_good: str | None,
    connected: bool,
    limits: LimitWatch,
    recheck: Callable[[str], Awaitable[str | None]],
    during_stop: bool,
    by_command: bool,
) -> tuple[ExitAccount, str | None]:
    """The account of ``process``, which has exited and been closed, and, when restarting
    cannot help, why. ``reason``: why its life says it ended ("" when it ended on its own);
    ``permanent``: why restarting cannot help, if its life found out already; ``report``: its
    ready report, if any; ``refused``: why the host refused a control connection with its
    token (``refused_for_good``: for a reason no restart changes); ``connected``: whether its
    control connection authenticated; ``recheck``: what its interpreter's check says now, given
    its last words (None: nothing against it: see
    :func:`~isoplug.host.interpreter_check.problem_after_import_failure`); ``during_stop``:
    whether the host had begun ending it; ``by_command``: a stop or restart ended it (its
    words come first in the reason once the supervisor takes that command)."""
    returncode = process.exited.result()
    if not tail.fed:
        # Its own log connections' last records are replayed before its end is accounted
        # and a stop returns, as its stdout/stderr are: the metrics are final then.
        await off_loop(tail.wait_fed, EXIT_REPLAY_TIMEOUT)
    # What the runner wrote on stderr last says why it could not get going; only that is
    # in the plugin's error, so quote it there (the whole of it is in its .stderr records).
    # One killed for not being ready may have said why too (a malformed stdin, a stuck
    # import): quoted, but only an exit before ready can make its words a lasting cause.
    stalled = reason.startswith(_NOT_READY)
    # So does a runner that exited because a plugin closed its descriptors (its words:
    # which ones).
    quotes = reason == BEFORE_READY or stalled or returncode == EXIT_DESCRIPTORS_CLOSED
    quoted = await _last_words(tail) if quotes else ""
    said = "" if stalled else quoted
    unconnected = reason == BEFORE_READY and not (connected or tail.connected)
    if unconnected and (problem := await recheck(said)):
        reason, quoted, permanent = problem, "", UNRUNNABLE  # its words: the check's, shorter
    reason, permanent = explained_exit(
        reason,
        quoted,
        returncode,
        permanent,
        refused=refused,
        refused_for_good=refused_for_good,
        own_python=any(m.python is not None for m in entries),
        connected=connected or tail.connected,
        said=said,
        report=report,
    )
    known = process.status_known
    sender = (
        process.host_signals.get(signal.Signals(-returncode)) if known and returncode < 0 else None
    )
    limit, note = limits.account(returncode, sender, known, process.cpu_at_exit)
    for more in (process.exit_note, note):
        if more:
            reason = f"{reason}; {more}" if reason else more
    account = ExitAccount(
        runner_id,
        process.pid,
        returncode,
        process.uptime,
        restarts,
        reason,
        sent_by_host=sender,
        oom_evidence=process.oom[0],
        oom_checked=process.oom[1],
        status_known=known,
        limit=limit,
        # Whatever the host sent it counts first: it was ending the runner itself.
        zygote_died=process.zygote_died and not process.host_signals,
        self_abort=self_abort(tail, returncode, sender),
        during_stop=during_stop,
    )
    if not account.reason and not by_command:
        # Nothing else said why: the signal the host sent, for a reason of the host's own
        # (not a finding about the runner: no hang, which metrics count apart), else how it
        # ended on its own. Never empty.
        sent = account.sent_by_host
        why = account.ended_on_its_own() if sent is None else f"{ENDED_BY_HOST}{sent}"
        account = dataclasses.replace(account, reason=why)
    return account, permanent


async def _last_words(tail: StderrTail) -> str:
    """The tail's quote, once the stderr records the runner sent before it died were
    replayed: its log connections end when they were (a moment at most, unless the host's
    log handlers are slow; then what came by then)."""
    if not tail.fed:
        await off_loop(tail.wait_fed, _LAST_WORDS_WAIT)
    return tail.quote()
