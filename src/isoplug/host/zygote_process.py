"""One zygote process, and the host's end of its socket (see :mod:`isoplug.host.zygote`).

A reader thread takes the zygote's replies: the pid and pidfd of each runner it forked, in
the order of the orders, and the exit status of each runner it reaped. A zygote is one host's
(:class:`~isoplug.host.zygote.Zygote`), or shared by the hosts of the process
(:mod:`isoplug.host.zygote_pool`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import msgspec

from isoplug.control import ZYGOTE_MODULE
from isoplug.control.zygote import ChildExited, Forked, ForkRefused
from isoplug.host.binding import release_in_forked_child
from isoplug.host.descendants import TAG_LENGTH, TAG_VARIABLE
from isoplug.host.runner_stdin import HostEnd, runner_stdin
from isoplug.host.site_stamps import SiteStamp, site_folders
from isoplug.host.standard_fds import child_stderr
from isoplug.log_guard import guarded_logger
from isoplug.wire.sanitize import clean_text

__all__ = ["ZygoteGone", "ZygoteProcess", "ZygoteRefused"]

_log = guarded_logger("isoplug.host")

#: Replies are a few bytes.
_MAX_REPLY_BYTES = 4096
#: Cap for the zygote's error text quoted in a record.
_MAX_ERROR_CHARS = 500

#: The tag variable's value in the zygote's environment: each child overwrites it in place.
_TAG_PLACEHOLDER = "0" * TAG_LENGTH


class ZygoteGone(Exception):
    """The zygote ended before it answered."""


class ZygoteRefused(Exception):
    """The zygote could not fork (its text, sanitized)."""


class ZygoteProcess:
    """One zygote process and the host's end of its socket. Create with :meth:`start`."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        sock: socket.socket,
        environment: Mapping[str, str],
        lifeline: HostEnd,
        site: SiteStamp | None = None,
    ) -> None:
        self._popen = popen
        #: The host's end of the zygote's stdin: its end-of-file tells the zygote to go.
        self._lifeline = lifeline
        self.pid = popen.pid
        #: The environment it was started with, from which its interpreter was set up.
        self.environment = dict(environment)
        #: Its site-packages folders as they were when it started (None: not stamped).
        self.site = site
        self._sock = sock
        self._send_lock = threading.Lock()
        #: One per order sent, answered in order.
        self._replies: collections.deque[concurrent.futures.Future[tuple[int, int | None]]] = (
            collections.deque()
        )
        self._state = threading.Condition()
        #: Statuses reported and not yet taken: pid -> (returncode, CPU time).
        self._exits: dict[int, tuple[int, float | None]] = {}
        #: Why it serves no more (None while it does), and when it ended (monotonic).
        self.ended: str | None = None
        self.ended_at: float | None = None
        self._closing = False
        #: Its host began stopping every runner: its death then ends runners being stopped,
        #: none is restarted, and it is said plainly, not as an ERROR.
        self.host_stopping = False
        #: Replaced by a newer zygote: it forks no more, and ends after its last runner.
        self.retiring = False
        #: Whether the host SIGKILLed it (:meth:`kill`): its end is then told as the host's.
        self.killed_by_host = False
        #: Set once the zygote has exited and was reaped.
        self.gone = threading.Event()
        self.forked = 0
        release_in_forked_child(self)
        threading.Thread(target=self._read, name=f"isoplug-zygote-{self.pid}", daemon=True).start()

    @classmethod
    def start(cls, env: Mapping[str, str]) -> ZygoteProcess:
        """Start a zygote with the host's environment for runners. Call it on a thread that
        lives as long as the zygote serves (the host's event loop's, or the shared zygotes'
        own: see :mod:`isoplug.host.zygote_pool`): the zygote's parent-death signal is tied to
        the thread that starts it. Raises :class:`OSError`."""
        started_with = dict(env)
        # Each child writes its own tag over this (see isoplug.runner.forked_start).
        started_with[TAG_VARIABLE] = _TAG_PLACEHOLDER
        # Before the interpreter reads them: a change from here on is seen, none missed.
        site = SiteStamp.take(site_folders(started_with))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A socket, as a runner's stdin is: no process of the user can open it through /proc
        # and hold the lifeline open (see isoplug.host.runner_stdin).
        stdin, lifeline = runner_stdin()
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE_MODULE, str(theirs.fileno())],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=child_stderr(),
                env=started_with,
                # In the host's session, as runners are (see isoplug.host.process): its
                # children share the host's scheduling group, below the host on the CPU.
                process_group=0,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            lifeline.close()
            raise
        finally:
            theirs.close()
            os.close(stdin)
        _log.debug("started the runner zygote (pid %d)", popen.pid)
        return cls(popen, ours, env, lifeline, site)

    def order(
        self, order: bytes, fds: Sequence[int]
    ) -> concurrent.futures.Future[tuple[int, int | None]]:
        """Send an encoded :class:`ForkOrder` with its descriptors (copied: the caller closes
        its own); the future resolves to ``(pid, pidfd)``, or fails with :class:`ZygoteGone`
        or :class:`ZygoteRefused`. Never blocks: raises :class:`BlockingIOError` while the
        socket's buffer is full (the zygote is still importing, or busy), nothing sent."""
        reply: concurrent.futures.Future[tuple[int, int | None]] = concurrent.futures.Future()
        with self._send_lock:
            if self.ended is not None or self.retiring:
                reply.set_exception(ZygoteGone(self.ended or "it was replaced by a newer one"))
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
        self._lifeline.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def outdated(self) -> str | None:
        """Why a runner forked now would not have what a spawned one has: its site-packages
        folders changed since it started (see :mod:`isoplug.host.site_stamps`); None if they
        did not."""
        return None if self.site is None else self.site.changed()

    def retire(self) -> None:
        """Have the zygote fork no more (end of its orders) and exit once the runners it
        forked have exited, reporting their exits as before: a newer zygote replaces it."""
        with self._send_lock:
            self.retiring = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def kill(self) -> None:
        """SIGKILL the zygote (its reader thread reaps it)."""
        self.killed_by_host = True
        with contextlib.suppress(OSError):
            self._popen.kill()

    def drop_inherited(self) -> None:
        """Close this process's copies of the socket and the lifeline (a forked child's: see
        :mod:`isoplug.host.binding`)."""
        self._closing = True
        self._sock.close()
        self._lifeline.drop_inherited()

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
        self._lifeline.close()
        returncode = self._popen.wait()
        how = (
            f"exited with code {returncode}"
            if returncode >= 0
            else f"was killed by {_signal_name(-returncode)}"
        )
        ended = f"the runner zygote (pid {self.pid}) {how}"
        with self._send_lock, self._state:
            self.ended = ended
            self.ended_at = time.monotonic()
            self._state.notify_all()
            replies, self._replies = list(self._replies), collections.deque()
        self.gone.set()
        for reply in replies:
            if reply.set_running_or_notify_cancel():
                reply.set_exception(ZygoteGone(ended))
        if self.retiring and returncode == 0:
            _log.debug("%s after its last runner (it had been replaced)", ended)
        elif self.host_stopping and not self._closing and self.killed_by_host:
            _log.warning(
                "%s by the host (%s) while it was stopping every runner: the runners it "
                "forked ended with it, before their teardown could end; none is restarted",
                ended,
                why,
            )
        elif self.host_stopping and not self._closing:
            _log.warning(
                "%s (%s) while the host was stopping every runner, not by the host's doing: "
                "the runners it forked ended with it, before their teardown could end; none "
                "is restarted",
                ended,
                why,
            )
        elif not self._closing:
            _log.error(
                "%s%s (%s); the runners it forked are killed with it, and are restarted at "
                "once (not counted as their plugins' crashes); the next runner start gets a new "
                "zygote",
                ended,
                " by the host" if self.killed_by_host else "",
                why,
            )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
