"""A hostile log sender for the ring recovery tests: ``python tests/ring_bomb_child.py KIND
RING_BYTES``.

It forwards to the receiver its environment names (as ``forward_logs`` does) with a ring of
``RING_BYTES`` (a power of two, up to the 64 MiB a receiver reads), logs one record and waits
until the receiver has it; then, its send lock held so that nothing else writes there, it
rewrites its ring as ``KIND`` says and ends at once (``os._exit``: no flush, no close), as the
outside check's evil_ring_sender.py did:

- ``nil-bomb``: the ring filled with msgpack nils (one byte each), its header claiming a
  record per byte, its ledger 1,000,000 more records accepted than it sent;
- ``shortest``: the ring filled with some of the shortest records a receiver replays (logger
  ``bomb``, message ``r``), numbered on from the one sent, counted by its header and ledger.

It prints how many records its ring then claims, before it ends.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import msgspec

from isoplug.logs import ForwardingHandler
from isoplug.logs import ring as ring_module
from isoplug.logs.ledger import ACKNOWLEDGED
from isoplug.logs.receiver import ADDRESS_ENV, NAME_ENV, TOKEN_ENV

#: The ledger's word for the last sequence number accepted.
ACCEPTED = 0


def main() -> None:
    kind, ring_bytes = sys.argv[1], int(sys.argv[2])
    # A sender's own ring is at most RING_BYTES; a hostile one makes it as large as a
    # receiver reads.
    ring_module.RING_BYTES = ring_bytes
    handler = ForwardingHandler(
        os.environ[ADDRESS_ENV],
        os.environ[TOKEN_ENV],
        name=os.environ.get(NAME_ENV, ""),
        queue_bytes=ring_bytes,
    )
    logger = logging.getLogger("bomb")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.warning("an honest record first")
    handler.flush(30)
    deadline = time.monotonic() + 30
    while not handler._ledger[ACKNOWLEDGED] and time.monotonic() < deadline:
        time.sleep(0.001)
    ring = handler._ring
    assert ring is not None and ring.capacity == ring_bytes, "no ring of that size"
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
