"""The host's zygote: a template process that has imported the runner stack and forks runners.

Spawning ``python -m isoplug.runner`` costs about 100 ms and 11 MiB of private memory per
runner, most of it importing Python, asyncio, msgspec and isoplug again. :class:`Zygote` starts
``python -m isoplug.runner.zygote`` (:mod:`isoplug.runner.zygote`) once per host, on first use,
from the event loop's thread (its parent-death signal is tied to that thread, as a runner's is),
and asks it to fork each runner (in test sessions, hosts share one instead:
:mod:`isoplug.host.zygote_pool`):

- The host makes the runner's stdin (its lifeline, a socket: :mod:`isoplug.host.runner_stdin`)
  and its stdout and stderr pipes, and sends the runner's ends with a
  :class:`~isoplug.control.zygote.ForkOrder` (the host's working directory, umask and resource
  limits now, the runner's inherited descriptor numbers) over a ``SOCK_SEQPACKET`` socket
  pair, the descriptors beside it (``SCM_RIGHTS``). The runner's environment
  (:class:`~isoplug.control.zygote.ForkedEnvironment`), then its bootstrap line with its
  tokens, go on the runner's stdin, as the bootstrap does for a spawned runner: nothing of one
  runner's own passes through the zygote, whose memory the runners forked later copy
  (:mod:`isoplug.host.fork_order`).
- The zygote forks; the child sets itself up as a spawned runner would be and runs the same
  ``main``. The zygote answers with the pid and a pidfd of the child (:class:`Forked`), reaps
  it when it exits and reports its status (:class:`~isoplug.control.zygote.ChildExited`).
- :class:`~isoplug.host.forked_child.ForkedChild` is the runner for
  :class:`~isoplug.host.process.RunnerProcess`: it polls the pidfd, takes the zygote's report
  as the exit status, signals through the pidfd.

When the zygote dies (a bug, or someone killed it), the host logs it and the next runner start
gets a new zygote (while the host stops every runner, it only says so: see
:meth:`Zygote.host_stopping`). The runners it had forked die with it (their parent-death
signal: a runner must never outlive the chain to its host), and their accounts say so
(``zygote_died``: they are restarted at once, not as their plugins' crashes); their exit status
comes from the kernel (``PIDFD_INFO_EXIT``, Linux 6.15) where it can tell, and is reported
unknown otherwise, never guessed. Where forking is unavailable (not Linux, no pidfds) or keeps
failing (a zygote that dies three times in a row before forking, or three times within ten
minutes), runners are spawned; so is a runner whose environment differs from the zygote's in
what a process reads only at its start (``PYTHON*``, the locale, ``LD_*``, ``MALLOC_*``...: see
:func:`~isoplug.host.fork_order.startup_differences`).

A zygote whose site-packages changed since it started (a package installed, upgraded or
removed: :mod:`isoplug.host.site_stamps`) is retired before the next fork: it forks no more,
and ends once the runners it forked have; the next fork starts a new zygote, so that a runner
forked after an install has what a spawned one would.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import msgspec

from isoplug.host import zygote_pool
from isoplug.host.descendants import read_stat
from isoplug.host.fork_order import environment_preamble, fork_order, startup_differences
from isoplug.host.forked_child import ForkedChild
from isoplug.host.runner_stdin import HostEnd
from isoplug.host.zygote_process import ZygoteGone, ZygoteProcess, ZygoteRefused
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop

__all__ = ["ForkedChild", "Zygote", "fork_supported"]

_log = guarded_logger("isoplug.host")

#: A zygote that dies this many times in a row without forking a runner is not started again.
_MAX_FAILED_STARTS = 3
#: Nor one that died this many times within _DEATHS_WINDOW seconds, forking or not: each death
#: kills every runner it forked (restarted, but not as their plugins' crashes).
_MAX_DEATHS = 3
_DEATHS_WINDOW = 600.0
#: How long a zygote let go may take to exit before it is killed (it exits at once, unless
#: stopped).
_LINGER = 2.0
#: How often an order is tried again while the socket's buffer is full.
_FULL_RETRY = 0.005


def fork_supported() -> bool:
    """Whether runners can be forked from a zygote here (Linux with pidfds and SCM_RIGHTS)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class Zygote:
    """The host's zygote: started on first use, replaced when it dies; :meth:`close` at the
    host's end. ``environment()`` is the environment a runner of no manifest gets (the
    zygote's own: it inherits the host's ``sys.path`` settings through it)."""

    def __init__(self, environment: Callable[[], dict[str, str]]) -> None:
        self._environment = environment
        self._process: ZygoteProcess | None = None
        #: Whether _process is a zygote shared with other hosts (isoplug.host.zygote_pool).
        self._shared = False
        self._failed_starts = 0
        #: When the zygotes died (monotonic), within the last _DEATHS_WINDOW seconds.
        self._deaths: collections.deque[float] = collections.deque()
        #: Zygotes replaced while runners they forked still ran (their own ones).
        self._retired: list[ZygoteProcess] = []
        self._closed = False
        self._encode = msgspec.msgpack.Encoder().encode

    @property
    def pid(self) -> int | None:
        """The current zygote's pid (None before the first fork, or once given up)."""
        process = self._process
        return None if process is None or process.ended else process.pid

    async def fork(
        self,
        env: Mapping[str, str],
        stdin: tuple[int, HostEnd],
        stdout: int,
        stderr: int,
        inherit: Sequence[int] = (),
    ) -> ForkedChild | None:
        """Fork a runner of the environment ``env`` whose stdin is ``stdin`` (the runner's end,
        the host's: the child object takes the host's, and the environment to write there
        first: see isoplug.host.runner_stdin), output goes to ``stdout`` and ``stderr``, and
        which inherits ``inherit`` under the same numbers. None: spawn it instead (no zygote
        can serve, logged; or ``env`` needs an interpreter of its own: see
        isoplug.host.fork_order). The caller closes its copies of the descriptors it
        passed."""
        preamble = environment_preamble(env)
        if preamble is None:
            _log.debug("a runner's environment is too large to send a forked runner: spawning it")
            return None
        self._replace_if_outdated()
        # Before a zygote is started for it: a host whose runners all differ needs none.
        differing = startup_differences(env, self._started_with())
        if differing:
            # Its interpreter would be the zygote's, set up from other values of these.
            _log.debug(
                "spawning a runner: its environment differs from the runner zygote's in %s, "
                "which a process reads only at its start",
                ", ".join(differing),
            )
            return None
        process = self._current()
        if process is None:
            return None
        try:
            order = self._encode(fork_order(inherit))
        except OSError as exc:
            _log.warning("could not read what a forked runner inherits (%s); spawning it", exc)
            return None
        while True:
            try:
                reply = process.order(order, [stdin[0], stdout, stderr, *inherit])
                break
            except BlockingIOError:
                # Only while the zygote imports, or forks a burst: it reads within moments.
                await asyncio.sleep(_FULL_RETRY)
                if process.retiring:
                    # Replaced meanwhile (another runner's fork found it out of date).
                    process = self._current()
                    if process is None:
                        return None
        try:
            pid, pidfd = await asyncio.wrap_future(reply)
        except ZygoteGone as exc:
            _log.warning("could not fork a runner: %s; spawning it instead", exc)
            return None
        except ZygoteRefused as exc:
            _log.warning("the runner zygote could not fork a runner (%s); spawning it", exc)
            return None
        except BaseException:
            # Cancelled: a runner forked meanwhile reads end-of-file instead of a bootstrap.
            reply.add_done_callback(_release)
            raise
        if pidfd is None:
            os.kill(pid, signal.SIGKILL)
            _log.warning("the runner zygote sent no pidfd for pid %d; spawning it instead", pid)
            return None
        self._failed_starts = 0
        return ForkedChild(pid, pidfd, stdin[1], process, preamble)

    def _started_with(self) -> dict[str, str]:
        """The environment of the zygote that forks the next runner: the running one's, or the
        one a new zygote gets."""
        process = self._process
        if process is not None and process.ended is None:
            return process.environment
        return self._environment()

    def _current(self) -> ZygoteProcess | None:
        process = self._process
        if process is not None and process.ended is None:
            return process
        if self._closed:
            return None
        if process is not None:
            given_up = self._count_death(process)
            if given_up is not None:
                _log.error("%s; spawning runners from now on", given_up)
                self._closed = True
                self._let_go(_LINGER)
                return None
        self._let_go(_LINGER)
        try:
            if zygote_pool.sharing():
                self._process, self._shared = zygote_pool.take(self._environment()), True
            else:
                self._process = ZygoteProcess.start(self._environment())
        except OSError as exc:
            _log.error("could not start the runner zygote (%s); spawning runners", exc)
            self._closed = True
            return None
        return self._process

    def _count_death(self, process: ZygoteProcess) -> str | None:
        """Count the death of ``process``, the current zygote; why no zygote is to be started
        again (None: one is)."""
        self._failed_starts = self._failed_starts + 1 if process.forked == 0 else 0
        if self._failed_starts >= _MAX_FAILED_STARTS:
            return f"the runner zygote died {_MAX_FAILED_STARTS} times without forking a runner"
        died = process.ended_at if process.ended_at is not None else time.monotonic()
        deaths = self._deaths
        deaths.append(died)
        while deaths[0] < died - _DEATHS_WINDOW:
            deaths.popleft()
        if len(deaths) < _MAX_DEATHS:
            return None
        return (
            f"the runner zygote died {len(deaths)} times within {_DEATHS_WINDOW:g} s, killing "
            f"the runners it had forked each time (the last: {process.ended})"
        )

    def _replace_if_outdated(self) -> None:
        """Retire the current zygote if a runner it forks would not have what a spawned one
        has (its site-packages changed: see isoplug.host.site_stamps): the next fork starts a
        new one; the old one ends with the last runner it forked."""
        process = self._process
        if process is None or process.ended is not None:
            return
        why = process.outdated()
        if why is None:
            return
        _log.info(
            "the site-packages or library folders the runner zygote (pid %d) started from "
            "changed (%s): runners "
            "are forked from a new zygote from now on, and that one ends with the last of "
            "its runners",
            process.pid,
            why,
        )
        self._process = None
        if self._shared:
            self._shared = False
            zygote_pool.retire(process)
            return
        process.retire()
        self._retired = [p for p in self._retired if not p.gone.is_set()] + [process]

    async def aclose(self, timeout: float = _LINGER) -> None:
        """Let the zygote go (once the runners are stopped: the ones left die with it), and
        wait up to ``timeout`` seconds for it to be gone (it exits at once; a shared one is
        kept for the next host), or killed."""
        endings = [self._let_go(timeout), *self._let_retired_go(timeout)]
        self._closed = True
        for ending in endings:
            if ending is not None:
                await off_loop(ending.join)

    def host_stopping(self) -> None:
        """The host began stopping every runner: a death of its zygotes from now on is said
        as such (see :meth:`~isoplug.host.zygote_process.ZygoteProcess.host_stopping`). Not a
        zygote shared with other hosts, whose runners may be running."""
        if self._process is not None and not self._shared:
            self._process.host_stopping = True
        for process in self._retired:
            process.host_stopping = True

    def resume_if_stopped(self, why: str, parent: int | None = None) -> bool:
        """SIGCONT the zygote (the runner's ``parent``, the current one's or one replaced; by
        default the current one) if it is stopped (SIGSTOP, a debugger's), which keeps it from
        doing its part (``why``); whether it was."""
        process = self._serving(parent)
        stat = None if process is None else read_stat(process.pid)
        if process is None or stat is None or stat.state not in ("T", "t"):
            return False
        _log.warning(
            "the runner zygote (pid %d) %s: it is stopped; continuing it", process.pid, why
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        return True

    async def settle_unreaped(
        self,
        pid: int,
        runner_id: str,
        wait_exit: Callable[[float | None], Awaitable[bool]],
        timeout: float,
    ) -> bool:
        """Whether runner ``runner_id`` (``pid``) has exited but its zygote did not reap it
        (stopped, say), which alone reports its status: then continue the zygote if it is
        stopped, give it ``timeout`` seconds to reap the runner, and kill it if it has not
        (init reaps the runner then); and wait for the exit (``wait_exit``). A signal cannot
        reach a zombie.

        A zygote that runs is given the time too: a runner is a zombie from its exit until
        its zygote gets the CPU to reap it, which on a loaded machine (the zygote runs at the
        runners' nice level) can be a good part of a second. Killed at once, the zygote took
        every other runner it forked along, a runner stopped or reloaded alone included."""
        stat = read_stat(pid)
        if stat is None or stat.state != "Z":
            return False
        unreaped = f"has not reaped runner {runner_id} (pid {pid}) after it exited"
        self.resume_if_stopped(unreaped, stat.ppid)
        if await wait_exit(timeout):
            return True
        self.kill_stuck(f"{unreaped}, {timeout:g} s since that was seen", stat.ppid)
        await wait_exit(None)
        return True

    def kill_stuck(self, why: str, parent: int | None = None) -> None:
        """SIGKILL the zygote (as for :meth:`resume_if_stopped`), which fails to do its part
        (``why``): the runners it forked are reaped by init then, and the next start gets a
        new zygote."""
        process = self._serving(parent)
        if process is not None:
            _log.warning("the runner zygote (pid %d) %s; killing it", process.pid, why)
            process.kill()

    def _serving(self, pid: int | None) -> ZygoteProcess | None:
        """The zygote of ``pid`` (the current one, or one replaced); the current one for
        None."""
        if pid is None:
            return self._process
        current = [] if self._process is None else [self._process]
        return next((p for p in (*current, *self._retired) if p.pid == pid), None)

    def close_now(self) -> None:
        """Let the zygote go without waiting for it (the host's loop is gone, or its close
        was cancelled); a thread of its own still kills it if it is not gone in
        :data:`_LINGER` seconds."""
        self._closed = True
        self._let_go(_LINGER)
        self._let_retired_go(_LINGER)

    def _let_go(self, timeout: float) -> threading.Thread | None:
        """Let the zygote go; the thread that makes sure it is gone within ``timeout``
        seconds (None for a shared zygote, kept for the next host)."""
        process, self._process = self._process, None
        shared, self._shared = self._shared, False
        if process is None:
            return None
        if shared:
            zygote_pool.release(process)
            return None
        return _end_within(process, timeout)

    def _let_retired_go(self, timeout: float) -> list[threading.Thread]:
        """Let the replaced zygotes go (the host's end: their runners are stopped, or die
        with them)."""
        retired, self._retired = self._retired, []
        return [_end_within(process, timeout) for process in retired if not process.gone.is_set()]

    def drop_inherited(self) -> None:
        """In a forked child of the host: close this process's copies of the zygote's socket
        and lifeline pipe, telling the zygote nothing (a shutdown of the socket would reach
        the parent's: the child's copy shares it)."""
        self._closed = True
        process, self._process = self._process, None
        self._shared = False
        # The replaced ones' copies are dropped by binding, as every zygote process's are.
        self._retired = []
        if process is not None:
            process.drop_inherited()


def _end_within(process: ZygoteProcess, timeout: float) -> threading.Thread:
    """Let ``process`` go; the thread that kills it if it is not gone within ``timeout``
    seconds."""
    process.close()
    # Its own thread, not the caller's wait: a cancelled close, or none on a closed loop,
    # must still end a zygote that does not exit (stopped by SIGSTOP, say), which would
    # hold its unreaped runners forever. Not a daemon: the interpreter's exit waits for it.
    ending = threading.Thread(
        target=_end_lingering, args=(process, timeout), name="isoplug-zygote-end"
    )
    ending.start()
    return ending


def _end_lingering(process: ZygoteProcess, timeout: float) -> None:
    if not process.gone.wait(timeout):
        _log.warning(
            "the runner zygote (pid %d) had not exited %g s after the host let it go; killing it",
            process.pid,
            timeout,
        )
        process.kill()


def _release(reply: concurrent.futures.Future[tuple[int, int | None]]) -> None:
    if reply.cancelled() or reply.exception() is not None:
        return
    _pid, pidfd = reply.result()
    if pidfd is not None:
        os.close(pidfd)
