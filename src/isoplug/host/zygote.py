"""The host's zygote: a template process that has imported the runner stack and forks runners.

Spawning ``python -m isoplug.runner`` costs about 100 ms and 11 MiB of private memory per
runner, most of it importing Python, asyncio, msgspec and isoplug again. :class:`Zygote` starts
``python -m isoplug.runner.zygote`` (:mod:`isoplug.runner.zygote`) once per host, on first use,
from the event loop's thread (its parent-death signal is tied to that thread, as a runner's is),
and asks it to fork each runner:

- The host makes the runner's pipes (stdin: its lifeline, stdout, stderr) and sends their ends
  with a :class:`~isoplug.control.ForkOrder` (its environment, the host's working directory,
  its inherited descriptors) over a ``SOCK_SEQPACKET`` socket pair, the descriptors beside it
  (``SCM_RIGHTS``). The bootstrap line, with the runner's tokens, goes on the runner's stdin
  as for a spawned runner: no token ever passes through the zygote.
- The zygote forks; the child sets itself up as a spawned runner would be and runs the same
  ``main``. The zygote answers with the pid and a pidfd of the child (:class:`Forked`), reaps
  it when it exits and reports its status (:class:`~isoplug.control.ChildExited`).
- :class:`~isoplug.host.forked_child.ForkedChild` is the runner for
  :class:`~isoplug.host.process.RunnerProcess`: it polls the pidfd, takes the zygote's report
  as the exit status, signals through the pidfd.

When the zygote dies (a bug, or someone killed it), the host logs it and the next runner start
gets a new zygote. The runners it had forked die with it (their parent-death signal: a runner
must never outlive the chain to its host), and their accounts say so; their exit status comes
from the kernel (``PIDFD_INFO_EXIT``, Linux 6.15) where it can tell, and is reported unknown
otherwise, never guessed. Where forking is unavailable (not Linux, no pidfds) or keeps failing,
runners are spawned.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import msgspec

from isoplug.control import (
    ZYGOTE_MODULE,
    ChildExited,
    Forked,
    ForkOrder,
    ForkRefused,
)
from isoplug.host.binding import release_in_forked_child
from isoplug.host.children import close_file_in_forked_child
from isoplug.host.descendants import TAG_LENGTH, TAG_VARIABLE
from isoplug.host.forked_child import ForkedChild
from isoplug.wire.sanitize import clean_text

__all__ = ["ForkedChild", "Zygote", "fork_supported"]

_log = logging.getLogger("isoplug.host")

#: As isoplug.runner.zygote.MAX_ORDER_BYTES: a larger environment is spawned instead.
_MAX_ORDER_BYTES = 128 * 1024
#: Replies are a few bytes.
_MAX_REPLY_BYTES = 4096
#: A zygote that dies this many times in a row without forking a runner is not started again.
_MAX_FAILED_STARTS = 3
#: How often an order is tried again while the socket's buffer is full.
_FULL_RETRY = 0.005
#: Cap for the zygote's error text quoted in a record.
_MAX_ERROR_CHARS = 500

#: The tag variable's value in the zygote's environment: each child overwrites it in place.
_TAG_PLACEHOLDER = "0" * TAG_LENGTH


class ZygoteGone(Exception):
    """The zygote ended before it answered."""


class ZygoteRefused(Exception):
    """The zygote could not fork (its text, sanitized)."""


def fork_supported() -> bool:
    """Whether runners can be forked from a zygote here (Linux with pidfds and SCM_RIGHTS)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class ZygoteProcess:
    """One zygote process and the host's end of its socket. Create with :meth:`start`."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._sock = sock
        self._send_lock = threading.Lock()
        #: One per order sent, answered in order.
        self._replies: collections.deque[concurrent.futures.Future[tuple[int, int | None]]] = (
            collections.deque()
        )
        self._state = threading.Condition()
        #: Statuses reported and not yet taken: pid -> (returncode, CPU time).
        self._exits: dict[int, tuple[int, float | None]] = {}
        #: Why it serves no more (None while it does).
        self.ended: str | None = None
        self._closing = False
        #: Set once the zygote has exited and was reaped.
        self.gone = threading.Event()
        self.forked = 0
        release_in_forked_child(self)
        threading.Thread(target=self._read, name=f"isoplug-zygote-{self.pid}", daemon=True).start()

    @classmethod
    def start(cls, env: Mapping[str, str]) -> ZygoteProcess:
        """Start a zygote with the host's environment for runners. Call it on the event loop's
        thread: the zygote's parent-death signal is tied to the thread that starts it. Raises
        :class:`OSError`."""
        env = dict(env)
        # Each child writes its own tag over this (see isoplug.runner.zygote).
        env[TAG_VARIABLE] = _TAG_PLACEHOLDER
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE_MODULE, str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=env,
                # In the host's session, as runners are (see isoplug.host.process): its
                # children share the host's scheduling group, below the host on the CPU.
                process_group=0,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        _log.debug("started the runner zygote (pid %d)", popen.pid)
        return cls(popen, ours)

    def order(
        self, order: bytes, fds: Sequence[int]
    ) -> concurrent.futures.Future[tuple[int, int | None]]:
        """Send an encoded :class:`ForkOrder` with its descriptors (copied: the caller closes
        its own); the future resolves to ``(pid, pidfd)``, or fails with :class:`ZygoteGone`
        or :class:`ZygoteRefused`. Never blocks: raises :class:`BlockingIOError` while the
        socket's buffer is full (the zygote is still importing, or busy), nothing sent."""
        reply: concurrent.futures.Future[tuple[int, int | None]] = concurrent.futures.Future()
        with self._send_lock:
            if self.ended is not None:
                reply.set_exception(ZygoteGone(self.ended))
                return reply
            self._replies.append(reply)
            try:
                # A packet goes whole or not at all; the socket stays blocking for the reader.
                socket.send_fds(self._sock, [order], list(fds), socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._replies.remove(reply)
                raise
            except OSError as exc:
                self._replies.remove(reply)
                reply.set_exception(ZygoteGone(f"the order could not be sent ({exc})"))
        return reply

    def wait_status(self, pid: int) -> tuple[int, float | None] | None:
        """Block until the zygote reports ``pid``'s exit (its returncode and CPU time), or ends
        (None)."""
        with self._state:
            while pid not in self._exits and self.ended is None:
                self._state.wait()
            return self._exits.pop(pid, None)

    def close(self) -> None:
        """Let the zygote go: it exits (and the runners it forked with it, if any are left)."""
        self._closing = True
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def drop_inherited(self) -> None:
        """Close this process's copies of the socket and the lifeline (a forked child's: see
        :mod:`isoplug.host.binding`)."""
        self._closing = True
        self._sock.close()
        close_file_in_forked_child(self._popen.stdin)

    def _read(self) -> None:
        replies = msgspec.msgpack.Decoder(Forked | ForkRefused | ChildExited)
        why = "it closed its socket"
        try:
            while True:
                data, fds, _flags, _address = socket.recv_fds(self._sock, _MAX_REPLY_BYTES, 1)
                if not data:
                    break
                try:
                    message = replies.decode(data)
                except msgspec.DecodeError as exc:
                    for fd in fds:
                        os.close(fd)
                    why = f"it sent what is not a reply ({exc})"
                    break
                self._take(message, fds)
        except OSError as exc:
            why = f"its socket failed ({exc})"
        finally:
            self._end(why)

    def _take(self, message: Forked | ForkRefused | ChildExited, fds: list[int]) -> None:
        if isinstance(message, ChildExited):
            with self._state:
                self._exits[message.pid] = (message.returncode, message.cpu)
                self._state.notify_all()
            return
        reply = self._replies.popleft() if self._replies else None
        if isinstance(message, Forked):
            self.forked += 1
            pidfd = fds[0] if fds else None
            if reply is None or not reply.set_running_or_notify_cancel():
                if pidfd is not None:
                    os.close(pidfd)
                return
            reply.set_result((message.pid, pidfd))
        elif reply is not None and reply.set_running_or_notify_cancel():
            reply.set_exception(ZygoteRefused(clean_text(message.error, _MAX_ERROR_CHARS)))

    def _end(self, why: str) -> None:
        self._sock.close()
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()
        returncode = self._popen.wait()
        how = (
            f"exited with code {returncode}"
            if returncode >= 0
            else f"was killed by {_signal_name(-returncode)}"
        )
        ended = f"the runner zygote (pid {self.pid}) {how}"
        with self._send_lock, self._state:
            self.ended = ended
            self._state.notify_all()
            replies, self._replies = list(self._replies), collections.deque()
        self.gone.set()
        for reply in replies:
            if reply.set_running_or_notify_cancel():
                reply.set_exception(ZygoteGone(ended))
        if not self._closing:
            _log.error(
                "%s (%s); the runners it forked are killed with it, and are restarted as "
                "crashed; the next runner start gets a new zygote",
                ended,
                why,
            )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Zygote:
    """The host's zygote: started on first use, replaced when it dies; :meth:`close` at the
    host's end. ``environment()`` is the environment a runner of no manifest gets (the
    zygote's own: it inherits the host's ``sys.path`` settings through it)."""

    def __init__(self, environment: Callable[[], dict[str, str]]) -> None:
        self._environment = environment
        self._process: ZygoteProcess | None = None
        self._failed_starts = 0
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
        stdin: tuple[int, int],
        stdout: int,
        stderr: int,
        inherit: Sequence[int] = (),
    ) -> ForkedChild | None:
        """Fork a runner whose stdin is the pipe ``stdin`` (read end, write end: the child
        object takes the write end), output goes to ``stdout`` and ``stderr``, and which
        inherits ``inherit`` under the same numbers. None: spawn it instead (no zygote can
        serve; logged). The caller closes its copies of the descriptors it passed."""
        tag = env.get(TAG_VARIABLE, "")
        order = self._encode(
            ForkOrder(
                env=dict(env),
                cwd=os.getcwd(),
                inherit=tuple(inherit),
                stamp=f"{TAG_VARIABLE}={tag}" if len(tag) == TAG_LENGTH else "",
            )
        )
        if len(order) > _MAX_ORDER_BYTES:
            _log.debug("a runner's environment is too large for the zygote: spawning it")
            return None
        process = self._current()
        if process is None:
            return None
        while True:
            try:
                reply = process.order(order, [stdin[0], stdout, stderr, *inherit])
                break
            except BlockingIOError:
                # Only while the zygote imports, or forks a burst: it reads within moments.
                await asyncio.sleep(_FULL_RETRY)
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
        return ForkedChild(pid, pidfd, stdin[1], process)

    def _current(self) -> ZygoteProcess | None:
        process = self._process
        if process is not None and process.ended is None:
            return process
        if self._closed:
            return None
        if process is not None:
            self._failed_starts = self._failed_starts + 1 if process.forked == 0 else 0
            if self._failed_starts >= _MAX_FAILED_STARTS:
                if self._failed_starts == _MAX_FAILED_STARTS:
                    self._failed_starts += 1
                    _log.error(
                        "the runner zygote died %d times without forking a runner; "
                        "spawning runners from now on",
                        _MAX_FAILED_STARTS,
                    )
                return None
        try:
            self._process = ZygoteProcess.start(self._environment())
        except OSError as exc:
            _log.error("could not start the runner zygote (%s); spawning runners", exc)
            self._closed = True
            return None
        return self._process

    async def aclose(self, timeout: float = 2.0) -> None:
        """Let the zygote go (once the runners are stopped: the ones left die with it), and
        wait up to ``timeout`` seconds for it to be gone (it exits at once)."""
        self.close_now()
        process = self._process
        if process is not None:
            await asyncio.to_thread(process.gone.wait, timeout)

    def close_now(self) -> None:
        """Let the zygote go without waiting for it (the host's loop is gone)."""
        self._closed = True
        if self._process is not None:
            self._process.close()

    def drop_inherited(self) -> None:
        """In a forked child of the host: close this process's copies of the zygote's socket
        and lifeline pipe, telling the zygote nothing (a shutdown of the socket would reach
        the parent's: the child's copy shares it)."""
        self._closed = True
        process, self._process = self._process, None
        if process is not None:
            process.drop_inherited()


def _release(reply: concurrent.futures.Future[tuple[int, int | None]]) -> None:
    if reply.cancelled() or reply.exception() is not None:
        return
    _pid, pidfd = reply.result()
    if pidfd is not None:
        os.close(pidfd)
