"""What the host tells its user about plugins: states, exit accounts, state changes."""

from __future__ import annotations

import dataclasses
import enum
import logging
import signal
from typing import Any

from isoplug.errors import IsoplugError, _unpickled
from isoplug.host.stderr_tail import outside_words

__all__ = [
    "ExitAccount",
    "PluginInfo",
    "PluginNotReady",
    "PluginState",
    "PluginUnavailable",
    "StateChange",
    "Unavailability",
]


class PluginState(enum.Enum):
    STARTING = "starting"
    """Its runner is being started, or has not reported ready yet."""
    READY = "ready"
    """Loaded and set up: calls and events reach it."""
    RESTARTING = "restarting"
    """Its runner exited unexpectedly; waiting (backoff) before starting it again."""
    FAILED = "failed"
    """Given up: it cannot be loaded, or it crashed too often. ``host.restart()`` retries."""
    STOPPED = "stopped"
    """Stopped on request (``host.stop()`` or host shutdown)."""


class Unavailability(enum.Enum):
    """Why a plugin could not take a call (:attr:`PluginUnavailable.reason`)."""

    #: No plugin of that id (its folder may have been skipped: the message says why).
    UNKNOWN = "unknown"
    #: The plugin failed for good (``host.restart(id)`` tries again).
    FAILED = "failed"
    #: Stopped on request, before or during the call.
    STOPPED = "stopped"
    #: Restarted on request, or replaced by hot reload (new code, a new plugin.toml), during
    #: the call or before it was ready: it may be sent again.
    RESTARTED = "restarted"
    #: Its runner was recycled by the host during the call (not a crash): it may be sent again.
    RECYCLED = "recycled"
    #: Its time ran out while the plugin was starting (:class:`PluginNotReady`).
    NOT_READY = "not_ready"
    #: Its runner ended just as the call was made: it may be sent again.
    RUNNER_LOST = "runner_lost"
    #: The host is not running: not started yet, closing or closed (also for a call under way
    #: that the host's close ended).
    HOST_NOT_RUNNING = "host_not_running"

    @property
    def transient(self) -> bool:
        """Whether the same call may work if sent again shortly."""
        return self in _TRANSIENT


_TRANSIENT = frozenset(
    {
        Unavailability.RESTARTED,
        Unavailability.RECYCLED,
        Unavailability.NOT_READY,
        Unavailability.RUNNER_LOST,
    }
)


class PluginUnavailable(IsoplugError):
    """A call went to a plugin that is failed, stopped, unknown, or not ready in time; or its
    runner was stopped, restarted or recycled during the call; or the host is not running
    (not started yet, or closed). :attr:`reason` says which (an HTTP handler answers 404 for
    :attr:`Unavailability.UNKNOWN`, and may retry when ``reason.transient``), and
    :attr:`plugin_id` the plugin, when the call named one."""

    def __init__(
        self,
        message: str,
        *,
        reason: Unavailability,
        plugin_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.plugin_id = plugin_id

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructor's arguments are not ``args`` (its message is built from them).
        return (_unpickled, (type(self), self.args), self.__dict__)


class PluginNotReady(PluginUnavailable, TimeoutError):
    """A call's time ran out while its plugin was starting or restarting: a timeout, as a
    :class:`~isoplug.errors.RequestTimeout` is (``except TimeoutError`` catches both), and a
    :class:`PluginUnavailable`. The call was never sent."""


#: How an account's reason starts when the host killed the runner (a hang, not ready in time,
#: a broken connection); what follows is the host's reason for the signal.
KILLED_BY_HOST = "killed by the host: "
#: How it starts when the host signalled the runner for a reason of its own that is no
#: finding about the runner (its supervision failed, its start was cancelled): no hang.
ENDED_BY_HOST = "ended by the host: "

#: Hints for the signals whose meaning a user is most likely to miss.
_SIGNAL_HINTS = {
    signal.SIGSEGV: "a segmentation fault: a crash in native code (a C extension), not in "
    "Python; the faulthandler text on stderr shows where",
}


#: Who sends a signal to a runner the host is stopping, most often.
_STOPPING_HINT = (
    "sender unknown: systemd's default KillMode=control-group signals every process of a "
    "service at once; KillMode=mixed, the host alone"
)

#: Hints for the self-aborts whose cause a user is likely to miss, by what the runner said.
_ABORT_HINTS = (
    (
        "uv__io_poll: Assertion",
        " (uvloop's event loop found a descriptor of its own closed: plugin code closing "
        "descriptors it did not open, below Python's os.close(), closes the runner's too)",
    ),
)


@dataclasses.dataclass(frozen=True)
class ExitAccount:
    """How one runner process ended."""

    runner_id: str
    #: 0: no process was started (``reason`` says why; ``returncode`` is a placeholder).
    pid: int
    #: As ``Popen.returncode``: the exit code, or minus the signal number.
    returncode: int
    #: Seconds from the process's start to its exit, as the host saw it (its pidfd, its
    #: ``waitpid``); not to this account, which may wait for output a child of it holds open.
    uptime: float
    #: How many times this runner had been restarted before this exit.
    restarts: int
    #: Why it ended: ``"stopped on request"``, ``"replaced by hot reload (...)"``, ``"killed by
    #: the host: ..."`` (a hang, not ready in time, its ``memory`` limit), ``"recycled: ..."``;
    #: for a runner that ended on its own, how, as :meth:`ended_on_its_own` says (``"exited
    #: with code 3"``, ``"killed by SIGSEGV, not sent by the host (...)"``), or what the host
    #: knows beyond that (``"it exited before reporting ready; its stderr ended with: ..."``).
    #: Empty only in an account made by hand.
    reason: str = ""
    #: Why the host sent the signal that ended it (None: the host did not send it).
    sent_by_host: str | None = None
    #: For a SIGKILL the host did not send: what shows the kernel's out-of-memory killer sent
    #: it (None: nothing does), and which sources were checked for that.
    oom_evidence: str | None = None
    oom_checked: tuple[str, ...] = ()
    #: False when the host could not learn the status (the zygote that forked the runner
    #: died first, and the kernel could not tell): ``returncode`` is then a placeholder
    #: (``-SIGKILL``, what the kernel sends a zygote's runners when it dies) and ``reason``
    #: says why.
    status_known: bool = True
    #: The limit of the runner's ``[limits]`` that ended it: ``"memory"`` (killed by the
    #: host), ``"recycle_rss"`` (recycled: not a crash), ``"cpu_seconds"`` (the kernel's
    #: SIGXCPU, or its SIGKILL at the hard limit); None: no limit did (``reason`` says how).
    limit: str | None = None
    #: True when the runner was forked by the host's zygote and ended because the zygote died
    #: (the kernel kills a zygote's runners with it; ``reason`` names the zygote's end): not
    #: the plugin's crash, so it is restarted at once and not counted toward its crash loop.
    zygote_died: bool = False
    #: For a SIGABRT the host did not send: what the runner wrote on its stderr right before
    #: that says it aborted itself (a failed assertion of native code, a fatal error of
    #: Python's; sanitized), as its own words; None: nothing did.
    self_abort: str | None = None
    #: True when the host had begun ending it (a stop, a restart, a recycle) when it ended: a
    #: signal the host did not send then came from outside while it stopped (a service
    #: manager signalling every process at once), and its account says so.
    during_stop: bool = False

    @property
    def exit_code(self) -> int | None:
        return self.returncode if self.returncode >= 0 and self.status_known else None

    @property
    def signal_name(self) -> str | None:
        if self.returncode >= 0 or not self.status_known:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and self.status_known

    def describe(self) -> str:
        """One line: what happened, who sent the signal that ended it (as far as known), a
        hint for SIGSEGV, why, uptime. (Restarts are the supervisor's to tell: a count in an
        account would be stale by the next restart.)"""
        if self.pid == 0:
            # No process was started (it could not be, or the host would not): no exit to tell.
            return f"runner {self.runner_id} did not start" + (
                f"; {self.reason}" if self.reason else ""
            )
        reason = self.reason
        sent = self.sent_by_host
        if self._signalled() and sent is not None:
            for restated in (f"{KILLED_BY_HOST}{sent}", f"{ENDED_BY_HOST}{sent}"):
                if reason.startswith(restated):
                    # The reason only restates the kill ("killed by the host: <why>"): said
                    # once, as a call's error says it ("... from the host: <why>").
                    reason = reason.removeprefix(restated).removeprefix("; ")
        text = f"runner {self.runner_id} (pid {self.pid}) {self._how(reason)}"
        if reason and reason != self.ended_on_its_own():
            text += f"; {reason}"
        return f"{text}; uptime {self.uptime:.1f} s"

    def ended_on_its_own(self) -> str:
        """The reason of an account whose runner ended on its own, the host knowing nothing
        beyond its status: how it ended and, for a signal, who sent it as far as known
        (``"exited with code 3"``, ``"killed by SIGKILL, not sent by the host (sender unknown;
        ...)"``)."""
        return self._how("").removeprefix("was ")

    def _signalled(self) -> bool:
        return self.status_known and self.returncode < 0

    def _how(self, reason: str) -> str:
        """How it ended: its exit code, or its signal and who sent it (``reason``: what the
        account says beside this, which may name the host's cause already)."""
        if not self.status_known:
            return "ended"
        if self.returncode >= 0:
            return f"exited with code {self.returncode}"
        return f"was killed by {self.signal_name}{self._sender(reason)}"

    def _sender(self, reason: str) -> str:
        sent = self.sent_by_host
        if sent is not None:
            # What is left of the reason may say it already.
            return "" if sent in reason else f" from the host: {sent}"
        if self.limit == "cpu_seconds":
            # The reason says which limit and the CPU time that reached it (SIGXCPU at the
            # soft limit, SIGKILL at the hard one, past it).
            return " from the kernel at its CPU time limit"
        if self.returncode == -signal.SIGABRT and self.self_abort is not None:
            # The kernel does not say who sent it, but what the runner wrote first does: in
            # quotes, its words, never read as the host's.
            said = outside_words(self.self_abort)
            why = next((h for words, h in _ABORT_HINTS if words in self.self_abort), "")
            return f", raised by the runner itself, as its stderr says: {said}{why}"
        outside = ", not sent by the host"
        if self.during_stop:
            outside += ", while the host was stopping it"
        if self.returncode != -signal.SIGKILL:
            # The kernel does not say who sent it; for a fault, what the signal means.
            # A SIGXCPU the host cannot tie to a limit it set is anyone's.
            hint = _SIGNAL_HINTS.get(signal.Signals(-self.returncode)) if self._known() else None
            if hint is None and self.during_stop:
                hint = _STOPPING_HINT
            return f"{outside} ({hint or 'sender unknown'})"
        if self.oom_evidence is not None:
            return f" from the kernel's out-of-memory killer ({self.oom_evidence})"
        checked = self.oom_checked
        verb = "shows" if len(checked) == 1 else "show"
        searched = f"; {' and '.join(checked)} {verb} no out-of-memory kill" if checked else ""
        return f"{outside} (sender unknown{searched})"

    def _known(self) -> bool:
        try:
            signal.Signals(-self.returncode)
        except ValueError:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """A snapshot of one plugin, as returned by ``Host.plugins()``."""

    id: str
    runner_id: str
    state: PluginState
    #: The runner's pid while it runs; None before it has started and once it has exited. A
    #: READY plugin may show None for a moment: its runner exited, and the host is reading
    #: what it wrote last before it says how it ended (the state changes then).
    pid: int | None
    restarts: int
    last_exit: ExitAccount | None
    #: Why the plugin is failed (or last failed to start), with the traceback when known.
    error: str | None = None
    methods: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    #: Events published to it that it dropped, in all its runners' lives: its queue in the
    #: runner was full (``max_queued_events``; each drop is also said by a WARNING on
    #: ``plugin.<id>.isoplug.runner``). Up to date as of the last health check
    #: (``health_interval``) while the runner runs; exact once it stopped.
    events_dropped: int = 0

    def summary(self) -> str:
        """Its state in a few words, for messages: ``ready (restarts 0, pid 4242)``, and the
        first line of its error, if any."""
        pid = f", pid {self.pid}" if self.pid is not None else ""
        text = f"{self.state.value} (restarts {self.restarts}{pid})"
        if self.error:
            # Sanitized by the supervisor; the first line says what, the traceback is in the log.
            text += f", last error: {self.error.splitlines()[0]}"
        return text


@dataclasses.dataclass(frozen=True)
class StateChange:
    """A plugin (or the runner of a group) changed state; ``message`` says so in a sentence."""

    runner_id: str
    plugin_ids: tuple[str, ...]
    state: PluginState
    message: str
    level: int = logging.INFO
    #: A FAILED change because the plugin's configuration does not fit its schema (so a new
    #: configuration, not a restart, is what helps).
    config_refused: bool = False
