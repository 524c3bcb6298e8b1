"""A host in a process of its own, for tests of the process it is embedded in:
``python tests/env_host_child.py DIR [--log-file FILE] [--close-stderr]``.

It logs every record (the host's and the plugins') as ``<level> <logger>: <message>`` to
stdout, or to ``FILE`` (opened first thing, as an application configures its logging:
started with descriptor 2 closed, the file takes that number). It runs a
:class:`~isoplug.Host` over the plugins of ``DIR`` (``--close-stderr``: with descriptor 2
closed right before) until they are ready, calls ``echo.echo("x")``, and ends with one JSON
line on stdout: the call's result, the pid of the host's zygote and the parent pid of each
runner (who forked it), and what descriptor 2 was when the host started and is at the end
(``/proc/self/fd``; None when closed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from isoplug import Host


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rpartition(b")")[2].split()[1])


def stderr_descriptor() -> str | None:
    return os.readlink("/proc/self/fd/2") if os.path.exists("/proc/self/fd/2") else None


async def main(directory: str, close_stderr: bool) -> dict[str, object]:
    if close_stderr:
        os.close(2)
    at_start = stderr_descriptor()
    async with Host(directory) as host:
        infos = await host.wait_ready(30)
        result = await host.call("echo", "echo", "x")
        zygote = host._zygote.pid if host._zygote is not None else None
        return {
            "result": result,
            "zygote": zygote,
            "runner_parents": [parent_of(info.pid) for info in infos if info.pid is not None],
            "stderr_at_start": at_start,
            "stderr_at_end": stderr_descriptor(),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--log-file")
    parser.add_argument("--close-stderr", action="store_true")
    arguments = parser.parse_args()
    if arguments.log_file:
        handler: logging.Handler = logging.FileHandler(arguments.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    summary = asyncio.run(main(arguments.directory, arguments.close_stderr))
    print(json.dumps(summary), flush=True)
