"""A test plugin that sends attacker-chosen text out of every door a plugin has."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from typing import Any

import isoplug

#: The ways out of a plugin that the security tests try, each taking one text.
DOORS = ("log", "print", "stderr", "fd_stdout", "fd_stderr", "warning", "exception")


def send(door: str, text: str) -> None:
    if door == "log":
        logging.getLogger("hostile").warning(text)
    elif door == "print":
        print(text)
    elif door == "stderr":
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    elif door == "fd_stdout":
        os.write(1, text.encode("utf-8", "surrogateescape") + b"\n")
    elif door == "fd_stderr":
        os.write(2, text.encode("utf-8", "surrogateescape") + b"\n")
    elif door == "warning":
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(text, UserWarning, stacklevel=1)
    elif door == "exception":
        try:
            raise ValueError(text)
        except ValueError:
            logging.getLogger("hostile").exception("failed")
    else:
        raise ValueError(f"unknown door {door!r}")


class Hostile(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def send(self, door: str, text: str) -> None:
        send(door, text)

    @isoplug.method
    async def send_many(self, door: str, text: str, count: int) -> None:
        def flood() -> None:
            for number in range(count):
                send(door, f"{text} {number}")

        await asyncio.to_thread(flood)

    @isoplug.method
    async def log_as(self, logger: str, text: str) -> None:
        logging.getLogger(logger).warning(text)

    @isoplug.method
    async def call_host(self, capability: str) -> Any:
        return await self.ctx.call_host(capability)

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()
