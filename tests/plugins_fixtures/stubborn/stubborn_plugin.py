"""Ignores SIGTERM and holds the GIL in teardown: only SIGKILL stops it.

A teardown that merely blocks its event loop (``time.sleep``) is ended by the runner itself at
the teardown timeout (see isoplug.runner.teardown); one long C call that never gives up the
GIL (a huge regex, a C extension's loop) leaves no thread of the runner able to act."""

from __future__ import annotations

import signal

import isoplug


class Stubborn(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def teardown(self) -> None:
        sum(range(10**15))  # one C call, minutes long: the GIL is never released
