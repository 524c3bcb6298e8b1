"""A hostile log sender for the ring recovery tests: ``python tests/ring_bomb_child.py KIND
RING_BYTES`` (``hog`` below takes more).

It forwards to the receiver its environment names (as ``forward_logs`` does) with a ring of
``RING_BYTES`` (a power of two, up to the 4 MiB a receiver reads), logs one record and waits
until the receiver has it; then, its send lock held so that nothing else writes there, it
rewrites its ring as ``KIND`` says and ends at once (``os._exit``: no flush, no close), as the
outside check's evil_ring_sender.py did:

- ``nil-bomb``: the ring filled with msgpack nils (one byte each), its header claiming a
  record per byte, its ledger 1,000,000 more records accepted than it sent;
- ``shortest``: the ring filled with some of the shortest records a receiver replays (logger
  ``bomb``, message ``r``), numbered on from the one sent, counted by its header and ledger.

It prints how many records its ring then claims, before it ends.

``hog RING_BYTES COUNT [GO_FILE]`` proposes a ring a receiver should not keep (larger than
4 MiB, or past its ``max_rings``), for tests/test_logs_ring_budget.py: its first record says
``hello from a ring of RING_BYTES bytes`` (logger ``hog``), then it prints ``ready``; once
``GO_FILE`` exists (at once without one), its send lock held so that none of them leaves, it
logs ``COUNT`` records more, which only its ring holds, and ends at once, as a crash does.

``hoard COUNT`` holds rings through pending ends, as the outside check's ring_host_exhaust.py
did: it opens ``COUNT`` log connections, each announcing a small ring on a chain of its own,
and closes each socket without a goodbye while it lives on (each end stays pending, with its
ring); then it prints ``hoarding`` and sleeps until it is killed.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import time

import msgspec

from isoplug.logs import ForwardingHandler
from isoplug.logs import ring as ring_module
from isoplug.logs.handler import DEFAULT_QUEUE_BYTES
from isoplug.logs.ledger import ACKNOWLEDGED, SenderLedger
from isoplug.logs.receiver import ADDRESS_ENV, NAME_ENV, TOKEN_ENV
from isoplug.rpc.blocking_channel import BlockingChannel
from isoplug.wire import LogBatch, encode_frame

#: The ledger's word for the last sequence number accepted.
ACCEPTED = 0
#: The ring each of ``hoard``'s connections announces: a small one costs the hoarder little.
HOARDED_RING_BYTES = 4096


def sender_with_ring(ring_bytes: int, logger_name: str, first: str) -> ForwardingHandler:
    """A forwarding handler on ``logger_name`` (to the receiver the environment names) whose
    ring has ``ring_bytes``, whatever a sender of isoplug's would make, once its record
    ``first`` went out and the receiver has its ledger (and can read its ring after it
    dies)."""
    # A sender's own ring is at most MAX_RING_BYTES; a hostile one makes it any size.
    ring_module.RING_BYTES = ring_module.MAX_RING_BYTES = ring_bytes
    handler = ForwardingHandler(
        os.environ[ADDRESS_ENV],
        os.environ[TOKEN_ENV],
        name=os.environ.get(NAME_ENV, ""),
        queue_bytes=ring_bytes,
    )
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.warning(first)
    handler.flush(30)
    deadline = time.monotonic() + 30
    while not handler._ledger[ACKNOWLEDGED]:
        if time.monotonic() > deadline:
            raise SystemExit("the receiver never took the ledger")
        time.sleep(0.001)
    ring = handler._ring
    assert ring is not None and ring.capacity == ring_bytes, "no ring of that size"
    return handler


def hog(ring_bytes: int, count: int, go_file: str | None) -> None:
    """The ``hog`` kind (see the module docstring)."""
    handler = sender_with_ring(ring_bytes, "hog", f"hello from a ring of {ring_bytes} bytes")
    logger = logging.getLogger("hog")
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while go_file is not None and not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {go_file}")
        time.sleep(0.01)
    with handler._send_lock:
        for index in range(count):
            logger.warning("unsent %d", index)
        os._exit(0)


def hoard(count: int) -> None:
    """The ``hoard`` kind (see the module docstring)."""
    address, token = os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV]
    name = os.environ.get(NAME_ENV, "hoarder")
    # Open for as long as this process lives: the receiver reads each through its own
    # descriptor, and the hoarder's own copy is what a sender would keep.
    ledgers: list[SenderLedger] = []
    for _ in range(count):
        ledger = SenderLedger.create(HOARDED_RING_BYTES)
        if ledger is None:
            raise SystemExit("no memfd: no ledger to announce")
        ledgers.append(ledger)

        def announce(_sock: socket.socket, ledger: SenderLedger = ledger) -> tuple[bytes, int]:
            # A chain of its own: no later connection takes this one's end over.
            batch = LogBatch(
                records=msgspec.Raw(b"\x90"),
                dropped={},
                ledger_fd=ledger.fd,
                resumed_after=None,
                chain=random.getrandbits(62),
                queue_bytes=DEFAULT_QUEUE_BYTES,
            )
            return encode_frame(batch), ledger.fd

        channel = BlockingChannel.connect(
            address, token, name=name, role="logs", after_hello=announce
        )
        channel.socket.close()  # no goodbye, and this process lives on: the end is pending
    print("hoarding", flush=True)
    time.sleep(600)


def main() -> None:
    if sys.argv[1] == "hoard":
        hoard(int(sys.argv[2]))
    kind, ring_bytes = sys.argv[1], int(sys.argv[2])
    if kind == "hog":
        hog(ring_bytes, int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    handler = sender_with_ring(ring_bytes, "bomb", "an honest record first")
    ring = handler._ring
    assert ring is not None
    with handler._send_lock:
        words, data = ring._words, ring._data
        tail, tail_seq = words[ring_module.TAIL_WORD], words[ring_module.TAIL_SEQ_WORD]
        if kind == "nil-bomb":
            data[:] = b"\xc0" * ring.capacity
            claimed = ring.capacity
            accepted = handler._ledger[ACCEPTED] + 1_000_000
            written = ring.capacity
        elif kind == "shortest":
            start = tail % ring.capacity
            records = bytearray()
            claimed = 0
            before_seq = ["bomb", 20, "INFO", 0, "", "", "", 0, None, None, None, None, None]
            while True:
                record = msgspec.msgpack.encode([*before_seq, tail_seq + claimed + 1, "r"])
                if start + len(records) + len(record) > ring.capacity:
                    break
                records += record
                claimed += 1
            data[start : start + len(records)] = records
            accepted = tail_seq + claimed
            written = len(records)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
        words[ring_module.HEAD_WORD] = tail + written
        words[ring_module.HEAD_SEQ_WORD] = tail_seq + claimed
        handler._ledger[ACCEPTED] = accepted
        print(claimed, flush=True)
        os._exit(0)


if __name__ == "__main__":
    main()
