"""A child for the standalone closed-log-socket tests (tests/test_logs_pending_ends.py):
``python tests/closed_fd_child.py SCENARIO COUNT``.

It forwards its logs with :func:`isoplug.logs.forward_logs` (address and token from the
environment), closes its log socket's descriptor behind the handler's back (as a daemonizing
program or an fd-cleanup loop does), logs COUNT records numbered ``extra={"n": i}`` while its
sender thread has not reconnected yet (the records stay in the broken connection's ring),
creates ``$STEP_DIR/logged``, then plays SCENARIO:

- ``wait``: waits to be killed; its sender thread waits a minute before it reconnects;
- ``resume``: its sender thread reconnects once the test creates ``$STEP_DIR/reconnect``
  (the receiver has the old connection's end pending by then); it logs COUNT more records,
  and exits normally once the test creates ``$STEP_DIR/exit``. With ``$HOLD_OLD_LEDGER``
  set, the sender thread, once it has announced the new connection, waits for
  ``$STEP_DIR/resumed`` before it lets the new connection take over (creating
  ``$STEP_DIR/announced`` first): until then the old ledger still counts the records logged
  after the break (as when the thread is descheduled there), and the old ring holds them,
  past where the new connection resumes. With ``$KILL_AFTER_HAND_OVER`` set, it logs no
  more records after the break's and SIGKILLs itself right after the sender thread handed
  over to the new connection, before it sent anything on it. With ``$KILL_IN_HAND_OVER`` set,
  it logs no more records after the break's and SIGKILLs itself in the middle of the
  hand-over: the new ledger counts the unsent records and the new ring holds them, and the old
  ledger, not set back yet, still counts them, its ring holding them too. With
  ``$NEW_RING_ROOM=N`` too, the new ring takes only the first N of them (as a ring without
  room for the queue does): the hand-over leaves the rest in memory only.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping

from isoplug.logs import ForwardingHandler, forward_logs, reconnect
from isoplug.logs.ledger import SenderLedger
from isoplug.logs.ring import SenderRing
from isoplug.rpc.blocking import BlockingChannel

log = logging.getLogger("child.work")


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    """Wait until the test creates ``path`` (its signal that a step is done)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.01)


class DelaysAfter(tuple[float, ...]):
    """Reconnection delays that are handed out once ``path`` exists: a reconnection reads
    them (iterates) when it begins, on the sender thread, which thus waits for the test."""

    path: str

    def __new__(cls, delays: tuple[float, ...], path: str) -> DelaysAfter:
        made = super().__new__(cls, delays)
        made.path = path
        return made

    def __iter__(self) -> Iterator[float]:
        wait_for_file(self.path)
        return super().__iter__()


def close_log_socket(handler: ForwardingHandler) -> None:
    """Close the log connection's socket descriptor behind the handler's back."""
    handler.flush(5)
    assert handler._sock is not None
    os.close(handler._sock.fileno())


def hold_the_old_ledger(handler: ForwardingHandler, path: str) -> None:
    """Make the sender thread wait for ``path`` between announcing a new connection and
    letting it take over (setting the old ledger back): it installs the new ring first."""
    install = handler._install_ring

    def install_once_path_exists(ring: SenderRing) -> bool:
        # Announced: the test may kill us before the hand-over.
        open(f"{os.path.dirname(path)}/announced", "w").close()
        wait_for_file(path)
        return install(ring)

    vars(handler)["_install_ring"] = install_once_path_exists


def die_after_the_hand_over(handler: ForwardingHandler) -> None:
    """SIGKILL this process as soon as a reconnection has handed over to its new connection,
    before its sender thread sends anything on it."""
    connect = handler._connect

    def connect_then_die(*, resumed: bool, timeout: float) -> BlockingChannel:
        channel = connect(resumed=resumed, timeout=timeout)
        if resumed:
            os.kill(os.getpid(), signal.SIGKILL)
        return channel

    vars(handler)["_connect"] = connect_then_die


def die_in_the_hand_over(path: str) -> None:
    """SIGKILL this process in the middle of the reconnection's hand-over (the one after
    ``path`` exists), once the new ledger counts what is unsent and before the old one is set
    back (the new connection's drop totals are set just between)."""
    set_drops = SenderLedger.set_drops

    def set_drops_then_die(ledger: SenderLedger, kind: int, totals: Mapping[int, int]) -> None:
        set_drops(ledger, kind, totals)
        if os.path.exists(path):
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(SenderLedger, "set_drops", set_drops_then_die)  # noqa: B010 - a method, replaced


def new_ring_with_room_for(handler: ForwardingHandler, room: int) -> None:
    """Make the ring of the next connection take only ``room`` of the records put in it."""
    install = handler._install_ring

    def install_into_a_small_ring(ring: SenderRing) -> bool:
        put = ring.put
        taken = [0]

        def put_while_room(encoded: bytes, seq: int) -> bool:
            if taken[0] == room:
                return False
            taken[0] += 1
            return put(encoded, seq)

        vars(ring)["put"] = put_while_room
        return install(ring)

    vars(handler)["_install_ring"] = install_into_a_small_ring


def numbered(start: int, count: int) -> None:
    for index in range(start, start + count):
        log.info("record %d", index, extra={"n": index})


def main() -> None:
    scenario, count = sys.argv[1], int(sys.argv[2])
    steps = os.environ["STEP_DIR"]
    handler = forward_logs(level=logging.DEBUG, name=f"closed-fd-{scenario}")
    if scenario == "wait":
        # Its only attempt comes a minute after the break: the test kills us long before.
        reconnect.RECONNECT_DELAYS = (60.0,)
    elif scenario == "resume":
        reconnect.RECONNECT_DELAYS = DelaysAfter((0.0,), f"{steps}/reconnect")
        if os.environ.get("HOLD_OLD_LEDGER"):
            hold_the_old_ledger(handler, f"{steps}/resumed")
        if os.environ.get("KILL_AFTER_HAND_OVER"):
            die_after_the_hand_over(handler)
        if os.environ.get("KILL_IN_HAND_OVER"):
            die_in_the_hand_over(f"{steps}/reconnect")
        if os.environ.get("NEW_RING_ROOM"):
            new_ring_with_room_for(handler, int(os.environ["NEW_RING_ROOM"]))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    close_log_socket(handler)
    numbered(0, count)
    open(f"{steps}/logged", "w").close()
    if scenario == "wait":
        wait_for_file(f"{steps}/never")
        return
    wait_for_file(f"{steps}/reconnect")
    if os.environ.get("KILL_AFTER_HAND_OVER") or os.environ.get("KILL_IN_HAND_OVER"):
        wait_for_file(f"{steps}/never")
    numbered(count, count)
    handler.flush(10)
    wait_for_file(f"{steps}/exit")


if __name__ == "__main__":
    main()
