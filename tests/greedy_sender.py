"""A sender process tree that takes log connections: ``python tests/greedy_sender.py N``.

Forks ``N`` processes; each opens one log connection to the receiver named by the
environment (``ISOPLUG_LOG_ADDRESS`` / ``ISOPLUG_LOG_TOKEN``) and keeps it while this
process's stdin is open. Prints ``<accepted> <refused>`` once every child has its answer, then
waits for stdin to close and ends the children.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
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


def main(count: int) -> None:
    read_end, write_end = os.pipe()
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                hold_one(write_end)
            finally:
                os._exit(0)
        children.append(pid)
    os.close(write_end)
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
def greedy_tree(address: object, token: str, count: int) -> Iterator[Outcome]:
    """Run this script as a child of the caller: how many of its ``count`` processes'
    connections to ``address`` were accepted and refused, held until the block ends."""
    child = subprocess.Popen(
        [sys.executable, __file__, str(count)],
        env={**os.environ, ADDRESS_ENV: str(address), TOKEN_ENV: token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        accepted, refused = map(int, child.stdout.readline().split())
        yield Outcome(accepted, refused, child.pid)
    finally:
        child.stdin.close()
        child.wait(_WAIT)
        child.stdout.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
