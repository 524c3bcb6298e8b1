"""What the intruder fixture's helpers do, in another runner's process group (``argv[1]``
names the part; its arguments are one JSON object, ``argv[2]``):

- ``forward``: open a log connection as ``runner`` with ``token``, log ``text``; print
  ``accepted`` or why it failed;
- ``squat``: hold ``count`` silent connections to the log listener, opening a new one
  whenever one is closed, until its stdin closes;
- ``middle``: start an ``orphan`` (on the same stdin; without the runner's tag in its
  environment unless ``keep_tag``), print its pid, then exit once its stdin says so: the
  orphan is re-parented;
- ``orphan``: once re-parented, join process group ``group``, then do the part named by
  ``then``: ``forward`` (the default) or ``squat``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

#: How long a closed silent connection waits to be opened again: the squatter holds its
#: places without spinning the shared machine's cores.
REOPEN_PAUSE = 0.05


def forward(address: str, token: str, runner: str, text: str) -> str:
    from isoplug.control import LOGS_ROLE
    from isoplug.logs import ForwardingHandler

    handler = ForwardingHandler(address, token, name=runner, role=LOGS_ROLE)
    try:
        if handler.start(10.0):
            record = logging.LogRecord("intruder", logging.WARNING, __file__, 1, text, (), None)
            handler.handle(record)
            handler.flush(10.0)
        return handler.failure or "accepted"
    finally:
        handler.close(timeout=0)


def squat(address: str, count: int) -> None:
    path = address.removeprefix("unix:")
    poller = select.poll()
    poller.register(sys.stdin.fileno(), select.POLLIN)
    held: dict[int, socket.socket] = {}
    while True:
        while len(held) < count:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            held[sock.fileno()] = sock
            poller.register(sock, select.POLLIN)
        for fd, _ in poller.poll():
            if fd == sys.stdin.fileno():
                return
            poller.unregister(fd)
            held.pop(fd).close()
        time.sleep(REOPEN_PAUSE)


def middle(arguments: dict[str, Any]) -> None:
    env = dict(os.environ)
    if not arguments.get("keep_tag"):
        env.pop("ISOPLUG_RUNNER_TAG", None)
    orphan = subprocess.Popen(
        [sys.executable, __file__, "orphan", json.dumps({**arguments, "middle": os.getpid()})],
        env=env,
    )
    print(orphan.pid, flush=True)
    sys.stdin.readline()
    os._exit(0)


def orphan(arguments: dict[str, Any]) -> None:
    while os.getppid() == arguments["middle"]:
        time.sleep(0.005)
    os.setpgid(0, arguments["group"])
    if arguments.get("then") == "squat":
        squat(arguments["address"], arguments["count"])
    else:
        print(
            forward(
                arguments["address"], arguments["token"], arguments["runner"], arguments["text"]
            )
        )


def main() -> None:
    part, arguments = sys.argv[1], json.loads(sys.argv[2])
    if part == "forward":
        print(
            forward(
                arguments["address"], arguments["token"], arguments["runner"], arguments["text"]
            )
        )
    elif part == "squat":
        squat(arguments["address"], arguments["count"])
    elif part == "middle":
        middle(arguments)
    elif part == "orphan":
        orphan(arguments)
    else:
        raise SystemExit(f"unknown part {part!r}")


if __name__ == "__main__":
    main()
