"""A test plugin that opens a log connection of its own, with its runner's token (taken from
the runner's forwarding handler, as any plugin can), and sends crafted frames that each ask the
host for a report: sequence gaps, growing drop totals over made-up levels, a ledger announced
again and again. It also sends events with made-up names on its runner's control connection."""

from __future__ import annotations

import gc
import logging
import os
import time

import isoplug
from isoplug.logs import ForwardingHandler
from isoplug.rpc import Peer
from isoplug.rpc.blocking import BlockingChannel
from isoplug.wire import LogBatch, LogRecordData
from isoplug.wire.logframes import log_batch


def _record(seq: int, text: str) -> LogRecordData:
    return LogRecordData(
        name="flooder.own",
        levelno=logging.WARNING,
        levelname="WARNING",
        created=time.time(),
        seq=seq,
        message=text,
        process=os.getpid(),
    )


def _own_log_connection() -> BlockingChannel:
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
    return BlockingChannel.connect(
        handler.address, handler._token, name=handler.sender_name, role="logs"
    )


class Flooder(isoplug.Plugin):
    @isoplug.method
    async def gaps(self, count: int, marker: str) -> None:
        """``count`` batches of one record each, every one a sequence number past a gap of 2
        (seq 3, 6, 9...); then a record saying ``marker``, and a goodbye."""
        channel = _own_log_connection()
        for n in range(1, count + 1):
            channel.send(log_batch([_record(3 * n, f"gap {n}")]))
        channel.send(log_batch([_record(3 * count + 1, marker)]))
        channel.close()

    @isoplug.method
    async def drops(self, count: int, levels: int, marker: str) -> None:
        """``count`` batches whose drop totals each grow by 1 at every one of ``levels`` made-up
        levels (1000, 1001, ...), plus 1 at DEBUG and at NOTSET (a connection failure)."""
        channel = _own_log_connection()
        for n in range(1, count + 1):
            totals = {1000 + level: n for level in range(levels)}
            totals[logging.DEBUG] = n
            totals[logging.NOTSET] = n
            channel.send(log_batch([_record(n, f"drop {n}")], dropped=totals))
        channel.send(log_batch([_record(count + 1, marker)]))
        channel.close()

    @isoplug.method
    async def ledgers(self, count: int, marker: str) -> None:
        """``count`` batches each announcing a ledger (all but the first are refused)."""
        channel = _own_log_connection()
        for _ in range(count):
            channel.send(LogBatch(records=log_batch([]).records, ledger_fd=2))
        channel.send(log_batch([_record(1, marker)]))
        channel.close()

    @isoplug.method
    async def events(self, names: int, size: int) -> None:
        """``names`` events with distinct made-up names of ``size`` characters each, on the
        runner's control connection."""
        peers = [o for o in gc.get_objects() if isinstance(o, Peer)]
        for peer in peers:
            for n in range(names):
                name = f"{n:08d}".ljust(size, "x")
                await peer.notify(name, None)
