"""A child process for RPC tests: connects back to the test with the token from stdin.

Handlers: ``echo``, ``pid``, ``hang`` (never answers), ``die`` (os._exit in the middle of a
request), ``send_garbage`` (writes bytes that are not a frame onto the connection), and
``call_back`` (calls ``host.echo`` on the parent). When the session ends it prints how it
ended on stdout and exits 0, so the test can see it was not a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from isoplug.rpc import Peer


async def main() -> None:
    bootstrap = json.loads(sys.stdin.readline())
    peer_box: list[Peer] = []

    async def hang(_: Any) -> None:
        await asyncio.Event().wait()

    def die(_: Any) -> None:
        os._exit(3)

    def send_garbage(_: Any) -> str:
        peer_box[0].stream.write(b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1")
        return "sent"

    async def call_back(value: Any) -> Any:
        return await peer_box[0].request("host.echo", value)

    handlers = {
        "echo": lambda p: p,
        "pid": lambda _: os.getpid(),
        "hang": hang,
        "die": die,
        "send_garbage": send_garbage,
        "call_back": call_back,
    }
    peer = await Peer.connect(
        bootstrap["address"], bootstrap["token"], name="child", handlers=handlers
    )
    peer_box.append(peer)
    await peer.wait_closed()
    print(f"session ended: {type(peer.close_error).__name__}: {peer.close_error}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
