"""A test plugin that sends attacker-chosen text out of every door a plugin has, and tries
what a plugin process can do beyond them (other runners' tokens, its own process tree)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
import warnings
from typing import Any

import msgspec

import isoplug
from isoplug.control import CAPABILITY, LOGS_ROLE, CapabilityRequest
from isoplug.logs import ForwardingHandler
from isoplug.rpc import Peer
from isoplug.wire import (
    Cancel,
    ErrorResponse,
    FrameDecoder,
    Hello,
    Message,
    Request,
    decode_message,
    encode_frame,
)
from isoplug.wire.messages import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION

#: The ways out of a plugin that the security tests try, each taking one text.
DOORS = ("log", "print", "stderr", "fd_stdout", "fd_stderr", "warning", "exception")


def send(door: str, text: str) -> None:
    if door == "log":
        logging.getLogger("hostile").warning(text)
    elif door == "print":
        print(text)
    elif door == "stderr":
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    elif door == "fd_stdout":
        os.write(1, text.encode("utf-8", "surrogateescape") + b"\n")
    elif door == "fd_stderr":
        os.write(2, text.encode("utf-8", "surrogateescape") + b"\n")
    elif door == "warning":
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(text, UserWarning, stacklevel=1)
    elif door == "exception":
        try:
            raise ValueError(text)
        except ValueError:
            logging.getLogger("hostile").exception("failed")
    else:
        raise ValueError(f"unknown door {door!r}")


class Hostile(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        #: Capability requests sent by start_capability, awaiting their answers, by id.
        self.requested: dict[int, asyncio.Future[Message]] = {}

    @isoplug.method
    async def send(self, door: str, text: str) -> None:
        send(door, text)

    @isoplug.method
    async def send_many(self, door: str, text: str, count: int) -> None:
        def flood() -> None:
            for number in range(count):
                send(door, f"{text} {number}")

        await asyncio.to_thread(flood)

    @isoplug.method
    async def log_as(self, logger: str, text: str) -> None:
        logging.getLogger(logger).warning(text)

    @isoplug.method
    async def call_host(self, capability: str) -> Any:
        return await self.ctx.call_host(capability)

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def call_host_as(self, plugin: str, capability: str) -> Any:
        """Call a host capability in the name of ``plugin``, past this plugin's own check (a
        plugin shares its runner's memory: nothing keeps it from the runner's internals)."""
        return await self.ctx._call_host(plugin, capability, {})

    @isoplug.method
    async def start_capability(self, capability: str) -> int:
        """Ask the host for ``capability`` on the runner's control connection, past the runner's
        own calling code; return the request's id (for :meth:`cancel_capability`)."""
        peer = _runner_peer()
        request_id = peer._connection.next_request_id()
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        peer._pending.add(request_id, CAPABILITY, answer, None)
        request = CapabilityRequest(plugin=self.ctx.plugin_id, name=capability, kwargs={})
        peer._send(
            Request(
                id=request_id,
                method=CAPABILITY,
                params=msgspec.Raw(msgspec.msgpack.encode(request)),
            )
        )
        self.requested[request_id] = answer
        return request_id

    @isoplug.method
    async def cancel_capability(self, request_id: int) -> dict[str, Any]:
        """Cancel the request ``request_id`` of :meth:`start_capability`; return the host's
        error answer as it came over the wire."""
        peer = _runner_peer()
        peer._send(Cancel(id=request_id))
        try:
            answer = await self.requested.pop(request_id)
        finally:
            peer._pending.forget(request_id)
        assert isinstance(answer, ErrorResponse), answer
        return msgspec.structs.asdict(answer.error)

    @isoplug.method
    async def forward_as(self, address: str, token: str, runner: str, text: str) -> str | None:
        """Open a log connection as ``runner`` with ``token`` (taken from that runner: the test
        hands it over) and log ``text`` through it; return why it failed (None: accepted)."""

        def attempt() -> str | None:
            handler = ForwardingHandler(address, token, name=runner, role=LOGS_ROLE)
            try:
                if handler.start(10.0):
                    handler.handle(logging.LogRecord("stolen", 30, __file__, 1, text, (), None))
                    handler.flush(10.0)
                return handler.failure
            finally:
                handler.close(timeout=0)

        return await asyncio.to_thread(attempt)

    @isoplug.method
    async def hello_as(
        self,
        address: str,
        token: str,
        *,
        runner: str,
        role: str,
        claimed_pid: int,
        capability: str | None = None,
    ) -> list[str]:
        """Send a hello as ``runner`` claiming pid ``claimed_pid`` (and, right behind it, a
        capability request in ``runner``'s name); return what the host answered, one
        ``"<type>: <reason>"`` per message, until it closed."""

        def attempt() -> list[str]:
            hello = Hello(
                min_version=MIN_PROTOCOL_VERSION,
                max_version=MAX_PROTOCOL_VERSION,
                token=token,
                role=role,
                name=runner,
                pid=claimed_pid,
            )
            data = encode_frame(hello)
            if capability is not None:
                request = CapabilityRequest(plugin=runner, name=capability, kwargs={})
                params = msgspec.Raw(msgspec.msgpack.encode(request))
                data += encode_frame(Request(id=1, method=CAPABILITY, params=params))
            decoder = FrameDecoder()
            answers: list[str] = []
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10.0)
                sock.connect(address.removeprefix("unix:"))
                sock.sendall(data)
                while chunk := sock.recv(65536):
                    for frame in decoder.receive_data(chunk):
                        message = decode_message(frame)
                        reason = getattr(message, "reason", "")
                        answers.append(f"{type(message).__name__}: {reason}")
            return answers

        return await asyncio.to_thread(attempt)

    @isoplug.method
    async def hold_log_connections(self, count: int) -> dict[str, int]:
        """Open ``count`` log connections to the host with this runner's own log token (out of
        its log handler: a plugin shares its runner's memory) and keep those accepted; return
        how many were accepted and refused."""
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
        hello = encode_frame(
            Hello(
                min_version=MIN_PROTOCOL_VERSION,
                max_version=MAX_PROTOCOL_VERSION,
                token=handler._token,
                role=LOGS_ROLE,
                name=handler.sender_name,
                pid=os.getpid(),
            )
        )
        held: list[socket.socket] = self.__dict__.setdefault("held", [])

        def attempt() -> dict[str, int]:
            outcome = {"accepted": 0, "refused": 0}
            for _ in range(count):
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(10.0)
                sock.connect(handler.address.removeprefix("unix:"))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    # A connection refused at accept is answered and closed before our hello
                    # goes out: its answer is still there to read.
                    sock.sendall(hello)
                decoder, answer = FrameDecoder(), None
                with contextlib.suppress(ConnectionResetError):
                    while answer is None and (chunk := sock.recv(65536)):
                        for frame in decoder.receive_data(chunk):
                            answer = decode_message(frame)
                if type(answer).__name__ == "Welcome":
                    outcome["accepted"] += 1
                    held.append(sock)
                else:
                    outcome["refused"] += 1
                    sock.close()
            return outcome

        return await asyncio.to_thread(attempt)

    @isoplug.method
    async def release_log_connections(self) -> int:
        held: list[socket.socket] = self.__dict__.setdefault("held", [])
        for sock in held:
            sock.close()
        count = len(held)
        held.clear()
        return count

    @isoplug.method
    async def holders_of(self, text: str) -> list[str]:
        """The types of the objects in this process that refer to a string equal to ``text``
        (other than ``text`` itself): everything reachable from the objects the collector
        tracks and from every thread's frames, untracked containers included."""
        found: list[str] = []
        seen: set[int] = set()
        pending: list[Any] = gc.get_objects()
        for top in sys._current_frames().values():
            frame: Any = top
            while frame is not None:
                pending.append(frame)
                frame = frame.f_back
        while pending:
            holder = pending.pop()
            if id(holder) in seen:
                continue
            seen.add(id(holder))
            for referent in gc.get_referents(holder):
                if type(referent) is str:
                    if referent == text and referent is not text:
                        found.append(type(holder).__name__)
                elif id(referent) not in seen:
                    pending.append(referent)
        return found

    @isoplug.method
    async def reach(self, path: str, port: int, host_pid: int, variable: str) -> dict[str, Any]:
        """What a plugin process may do as the host's user: read a file, connect to a port,
        signal the host (signal 0: only the permission check), read the environment."""
        with open(path) as file:
            content = file.read()
        with socket.create_connection(("127.0.0.1", port), timeout=10.0):
            connected = True
        os.kill(host_pid, 0)
        return {
            "uid": os.getuid(),
            "file": content,
            "connected": connected,
            "signalled": True,
            "environment": os.environ.get(variable),
        }

    @isoplug.method
    async def descendants_log(self, text: str) -> dict[str, int]:
        """Start two descendants that log ``text`` through the handler they inherit: one whose
        parent exited before it logs (re-parented away from this runner), one that left the
        runner's session (``setsid``). Return their pids once both have exited."""
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                parent = os.getpid()
                orphan = os.fork()
                if orphan == 0:
                    # The intermediate parent exits at once: wait to be someone else's child.
                    while os.getppid() == parent:
                        time.sleep(0.005)
                    logging.getLogger("hostile").warning("%s from an orphan", text)
                    logging.shutdown()
                    os._exit(0)
                os.write(write_end, orphan.to_bytes(4, "big"))
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
        orphan = int.from_bytes(os.read(read_end, 4), "big")
        os.close(read_end)
        os.close(write_end)
        leaver = os.fork()
        if leaver == 0:
            try:
                os.setsid()
                logging.getLogger("hostile").warning("%s from a new session", text)
                logging.shutdown()
            finally:
                os._exit(0)
        os.waitpid(leaver, 0)
        # The orphan is not this runner's child: wait for its end by its pid.
        while _alive(orphan):
            await asyncio.sleep(0.01)
        return {"orphan": orphan, "setsid": leaver}


def _runner_peer() -> Peer:
    """The runner's control connection (a plugin shares the runner's memory)."""
    (peer,) = [o for o in gc.get_objects() if isinstance(o, Peer)]
    return peer


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, waiting for its new parent to reap it, is over)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
