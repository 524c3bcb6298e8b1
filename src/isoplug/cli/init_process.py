"""``isoplug run`` and ``isoplug demo`` as PID 1 (a container started without ``--init``): a
process of their own reaps every orphan, as tini and ``docker run --init`` do.

The kernel re-parents every orphan of a PID namespace to its PID 1, which must ``wait()`` for
it, or its corpse stays in the process table (a zombie) for as long as PID 1 runs. The host
reaps its own children (runners, the zygote) and ends what a runner leaves behind, but never
waits for processes it did not start: a plugin running ``sh -c "cmd &"`` every few seconds, or
a crash loop whose plugin double-forks a daemon, would fill the table. Nor can the host wait
for every child (``waitpid(-1)``): that would steal the exit statuses its child watchers wait
for. So the command, when it finds itself PID 1, forks at once, before any thread starts:

- the child goes on as the command, exactly as when it is not PID 1;
- the parent stays PID 1 and does nothing else than reap every child the kernel gives it, and
  forward the signals an operator or a container runtime sends (``docker stop``'s SIGTERM,
  ``docker kill -s``) to the child; it ends when the child ends, with its exit code, or 128 +
  the number of the signal that ended it (as a shell reports it: PID 1 cannot die of a signal
  it sends itself).

Waiting with ``sigwaitinfo`` on signals blocked before the fork: none is lost between the fork
and the wait, no handler runs in the middle of a ``waitpid``, and the kernel delivers them to
PID 1 although it has no handler (a signal PID 1 neither handles nor blocks is dropped).

A host inside an application does none of this: the application owns its children and their
statuses; run it under an init (``docker run --init``, tini) instead (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["FORWARDED", "reap_as_pid1"]

#: What PID 1 passes on to the command: the stop signals, and those a user may send it for its
#: own use. The others it would get only from the kernel, for itself.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

#: The exit code for a command a signal ended: 128 + its number, as a shell says it.
_SIGNALLED_BASE = 128


def reap_as_pid1() -> int | None:
    """If this process is PID 1, fork: in the child, return PID 1's pid (1; the command goes on
    there); the parent reaps and forwards until the child ends, then exits with its code, and
    never returns. None when this process is not PID 1 (or cannot fork: the command then runs
    as PID 1 itself, as before)."""
    if os.getpid() != 1:
        return None
    waited = {*FORWARDED, signal.SIGCHLD}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        command = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return None
    if command == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return 1
    os._exit(_serve(command, waited))


def _serve(command: int, waited: set[signal.Signals]) -> int:
    """Forward what comes to ``command``, reap every child; ``command``'s exit code once it
    has ended."""
    while True:
        received = signal.sigwaitinfo(waited)
        if received.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, received.si_signo)
            continue
        # One SIGCHLD may stand for several children: the kernel keeps one pending at a time.
        code = _reap_all(command)
        if code is not None:
            return code


def _reap_all(command: int) -> int | None:
    """Reap every child that has ended; ``command``'s exit code if it is one of them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == command:
            returncode = os.waitstatus_to_exitcode(status)
            code = returncode if returncode >= 0 else _SIGNALLED_BASE - returncode
