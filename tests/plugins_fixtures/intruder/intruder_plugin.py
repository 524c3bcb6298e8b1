"""A test plugin that starts helpers in another runner's process group (runners share the
host's session, so a plugin's process may ``setpgid`` into any runner's group), to speak for
that runner or to take its log connection places. Its helper's parts: intruder_helper.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import isoplug

HELPER = str(Path(__file__).with_name("intruder_helper.py"))


def _helper(part: str, process_group: int | None, **arguments: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HELPER, part, json.dumps(arguments)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        process_group=process_group,
    )


class Intruder(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.squatter: subprocess.Popen[str] | None = None
        self.middle: subprocess.Popen[str] | None = None

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    def forward_from_group(
        self, group: int, address: str, token: str, runner: str, text: str
    ) -> dict[str, Any]:
        """A helper, a child of this runner in process group ``group``, logs ``text`` as
        ``runner`` with ``token``: its pid and whether it was accepted (or why not)."""
        helper = _helper("forward", group, address=address, token=token, runner=runner, text=text)
        outcome, _ = helper.communicate("")
        return {"pid": helper.pid, "outcome": outcome.strip()}

    @isoplug.method
    def squat(self, group: int, address: str, count: int) -> int:
        """A helper in process group ``group`` holds ``count`` silent connections to the log
        listener (no hello, no token), opening a new one as each is closed; its pid."""
        self.squatter = _helper("squat", group, address=address, count=count)
        return self.squatter.pid

    @isoplug.method
    async def stop_squatting(self) -> None:
        squatter, self.squatter = self.squatter, None
        if squatter is not None:
            await asyncio.to_thread(squatter.communicate, "")

    @isoplug.method
    def start_orphan(
        self,
        group: int,
        address: str,
        token: str,
        runner: str,
        text: str,
        *,
        keep_tag: bool = False,
    ) -> int:
        """A child of this runner starts a process (without this runner's tag unless
        ``keep_tag``) that waits to be orphaned: :meth:`release_orphan` ends its parent; it
        then joins process group ``group`` and logs ``text`` as ``runner`` with ``token``. Its
        pid."""
        self.middle = _helper(
            "middle",
            None,
            group=group,
            address=address,
            token=token,
            runner=runner,
            text=text,
            keep_tag=keep_tag,
        )
        assert self.middle.stdout is not None
        return int(self.middle.stdout.readline())

    @isoplug.method
    def release_orphan(self) -> str:
        """End the orphan's parent; what the orphan then said: ``accepted``, or why not."""
        middle, self.middle = self.middle, None
        assert middle is not None
        # The orphan holds the pipe's write end too: this reads until it has exited.
        outcome, _ = middle.communicate("\n")
        return str(outcome.strip())
