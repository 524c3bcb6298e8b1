"""A sender process tree that takes log connections: ``python tests/greedy_sender.py N [orphans]``.

Forks ``N`` processes; each opens one log connection to the receiver named by the
environment (``ISOPLUG_LOG_ADDRESS`` / ``ISOPLUG_LOG_TOKEN``) and keeps it while this
process's stdin is open. Prints ``<accepted> <refused>`` once every child has its answer, then
waits for stdin to close and ends the children. With ``orphans``, each child double-forks
first: its own child connects once this process has reaped it, re-parented to init (or a
subreaper) by then, and ends when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

from isoplug.errors import IsoplugError
from isoplug.logs.receiver import ADDRESS_ENV, TOKEN_ENV
from isoplug.rpc import BlockingChannel

_WAIT = 20.0


def hold_one(report: int) -> None:
    """In a forked child: connect, say whether it was accepted, hold it until stdin closes."""
    try:
        channel = BlockingChannel.connect(
            os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV], name="greedy", role="logs"
        )
    except IsoplugError:
        os.write(report, b"0")
        return
    os.write(report, b"1")
    sys.stdin.read()
    channel.close()


def main(count: int, orphans: bool) -> None:
    read_end, write_end = os.pipe()
    # Orphans wait for a byte each: sent once their middle processes are reaped.
    go_read, go_write = os.pipe()
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.close(go_write)
            try:
                if orphans:
                    if os.fork():
                        os._exit(0)  # the middle process: its child is orphaned
                    os.read(go_read, 1)
                hold_one(write_end)
            finally:
                os._exit(0)
        children.append(pid)
    os.close(write_end)
    os.close(go_read)
    if orphans:
        for pid in children:
            os.waitpid(pid, 0)  # reaped: its child was re-parented before
        children = []
        os.write(go_write, b"x" * count)
    answers = b""
    while len(answers) < count and (chunk := os.read(read_end, count)):
        answers += chunk
    print(answers.count(b"1"), answers.count(b"0"), flush=True)
    sys.stdin.read()
    for pid in children:
        os.waitpid(pid, 0)


class Outcome(NamedTuple):
    accepted: int
    refused: int
    pid: int  # the tree's top: the script's process


@contextlib.contextmanager
def greedy_tree(
    address: object,
    token: str,
    count: int,
    *,
    orphans: bool = False,
    new_session: bool = False,
) -> Iterator[Outcome]:
    """Run this script as a child of the caller: how many of its ``count`` processes'
    connections to ``address`` were accepted and refused, held until the block ends.
    ``orphans``: each connects from a double-forked orphan; ``new_session``: the script is
    started in a session (and process group) of its own."""
    child = subprocess.Popen(
        [sys.executable, __file__, str(count), *(["orphans"] if orphans else [])],
        env={**os.environ, ADDRESS_ENV: str(address), TOKEN_ENV: token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        accepted, refused = map(int, child.stdout.readline().split())
        yield Outcome(accepted, refused, child.pid)
    finally:
        child.stdin.close()
        child.wait(_WAIT)
        child.stdout.close()


@contextlib.asynccontextmanager
async def greedy_tree_off_loop(
    address: object, token: str, count: int, **options: bool
) -> AsyncIterator[Outcome]:
    """:func:`greedy_tree` waited for in a thread: the receiver may run on this loop."""
    stack = contextlib.ExitStack()
    outcome = await asyncio.to_thread(
        stack.enter_context, greedy_tree(address, token, count, **options)
    )
    try:
        yield outcome
    finally:
        await asyncio.to_thread(stack.close)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] == ["orphans"])
