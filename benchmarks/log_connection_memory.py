"""What a log connection costs the host, against the standard library's threaded server,
measured in the same run: the numbers behind the bound on the host's log threads (128 +
``max_log_connections`` per runner, see docs/design.md, "After authentication").

- *isoplug host*: a plugin opens ``--connections`` log connections with its runner's own
  token (as a plugin forking a pool of loggers would); the host's RSS and thread count are
  read before and after, and the difference divided by the threads added;
- *socketserver*: ``socketserver.ThreadingUnixStreamServer`` with a handler that sleeps in
  ``recv()``, as many connections from this process (a socket object each, a few hundred
  bytes, counted in).

Each round opens and closes all of them again; the first round is the one that counts for a
host that never had that many (later rounds reuse the memory the first one freed).

Run: ``python benchmarks/log_connection_memory.py [--connections N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import socketserver
import statistics
import tempfile
import threading
from pathlib import Path

from isoplug import Host, SupervisorConfig

PLUGIN = """\
import asyncio
import logging

import isoplug
from isoplug.logs import ForwardingHandler
from isoplug.rpc import BlockingChannel


class Holder(isoplug.Plugin):
    held = []

    @isoplug.method
    async def hold(self, count: int) -> int:
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))

        def connect() -> None:
            for _ in range(count):
                self.held.append(
                    BlockingChannel.connect(
                        handler.address, handler._token, name=handler.sender_name, role="logs"
                    )
                )

        await asyncio.to_thread(connect)
        return len(self.held)

    @isoplug.method
    async def release(self) -> None:
        for channel in self.held:
            channel.close()
        self.held.clear()
"""


def rss_and_threads() -> tuple[int, int]:
    """This process's resident memory (KiB) and thread count, from ``/proc/self/status``."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]), int(fields["Threads"][0])


async def host_rounds(count: int, rounds: int) -> list[float]:
    """KiB of host RSS per log connection, each round."""
    root = Path(tempfile.mkdtemp()) / "plugins"
    (root / "holder").mkdir(parents=True)
    (root / "holder" / "holder.py").write_text(PLUGIN)
    (root / "holder" / "plugin.toml").write_text(
        'id = "holder"\nversion = "1"\nentry = "holder:Holder"\n'
    )
    config = dataclasses.replace(SupervisorConfig(), max_log_connections=count + 1)
    results = []
    async with Host(root, config=config) as host:
        await host.wait_ready(30)
        bridge = host._log_bridge
        for _ in range(rounds):
            rss, threads = rss_and_threads()
            await host.call("holder", "hold", count)
            while bridge.open_connections("holder") < count + 1:
                await asyncio.sleep(0.01)
            rss_after, threads_after = rss_and_threads()
            results.append((rss_after - rss) / max(1, threads_after - threads))
            await host.call("holder", "release")
            while bridge.open_connections("holder") > 1:
                await asyncio.sleep(0.01)
    return results


class _Sleeper(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(65536):
            pass


def socketserver_rounds(count: int, rounds: int) -> list[float]:
    """KiB of RSS per connection of a ThreadingUnixStreamServer, each round."""
    path = os.path.join(tempfile.mkdtemp(), "sock")
    server = socketserver.ThreadingUnixStreamServer(path, _Sleeper)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = []
    try:
        for _ in range(rounds):
            rss, threads = rss_and_threads()
            clients = []
            for _ in range(count):
                client = socket.socket(socket.AF_UNIX)
                client.connect(path)
                clients.append(client)
            while rss_and_threads()[1] < threads + count:
                threading.Event().wait(0.01)
            rss_after, threads_after = rss_and_threads()
            results.append((rss_after - rss) / max(1, threads_after - threads))
            for client in clients:
                client.close()
            while rss_and_threads()[1] > threads:
                threading.Event().wait(0.01)
    finally:
        server.shutdown()
        server.server_close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    host = asyncio.run(host_rounds(args.connections, args.rounds))
    peer = socketserver_rounds(args.connections, args.rounds)
    print(f"{args.connections} connections, {args.rounds} rounds (KiB of RSS per connection)")
    for label, values in (("isoplug host", host), ("socketserver", peer)):
        shown = ", ".join(f"{value:.1f}" for value in values)
        print(
            f"  {label:<14} first {values[0]:5.1f}  median {statistics.median(values):5.1f}"
            f"  [{shown}]"
        )
    print(f"  host / socketserver, first round: {host[0] / peer[0]:.2f}x")


if __name__ == "__main__":
    main()
