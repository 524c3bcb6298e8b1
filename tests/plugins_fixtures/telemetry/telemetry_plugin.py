"""A test plugin for the OpenTelemetry export: each method makes records of one kind and
returns what the test should find in the collector (line numbers, its pid)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import isoplug

log = logging.getLogger("telemetry.work")


class QuotaExceeded(Exception):
    """An exception class only the plugin has."""


class Telemetry(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def log_fields(self, marker: str) -> dict[str, Any]:
        """One WARNING with extras (and the trace attributes OpenTelemetry's logging
        instrumentation puts on records) from a named thread; returns where it was logged."""
        where: dict[str, Any] = {}

        def work() -> None:
            where["line"] = sys._getframe().f_lineno + 1
            log.warning(
                "quota at %d%% for %s",
                93,
                marker,
                extra={
                    "tenant": "acme",
                    "attempt": 2,
                    "ratio": 0.93,
                    "flags": ["a", "b"],
                    "otelTraceID": "0af7651916cd43dd8448eb211c80319c",
                    "otelSpanID": "b7ad6b7169203331",
                    "otelTraceSampled": True,
                },
            )

        thread = threading.Thread(target=work, name="quota-worker")
        thread.start()
        thread.join()
        where["file"] = __file__
        return where

    @isoplug.method
    async def log_levels(self, marker: str) -> None:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            log.log(level, "%s at %s", marker, logging.getLevelName(level))
        log.log(logging.CRITICAL, "%s at CRITICAL", marker)
        log.log(25, "%s at 25", marker)

    @isoplug.method
    async def raise_logged(self, marker: str) -> str:
        """log.exception() of the plugin's own exception class; returns Python's traceback."""
        import traceback

        try:
            raise QuotaExceeded(f"tenant over quota ({marker})")
        except QuotaExceeded as exc:
            log.exception("request failed: %s", marker)
            return "".join(traceback.format_exception(exc)).rstrip("\n")

    @isoplug.method
    async def print_lines(self, marker: str) -> None:
        print(f"{marker} on stdout", flush=True)
        print(f"{marker} on stderr", file=sys.stderr, flush=True)

    @isoplug.method
    def flood(self, count: int, rate: float = 0.0, start: int = 0) -> float:
        """``count`` INFO records numbered from ``start`` (the ``n`` extra), as fast as
        possible (rate 0) or paced at ``rate`` per second; returns the seconds it took. Sync:
        runs in a worker thread."""
        began = time.perf_counter()
        for index in range(count):
            if rate and index % 100 == 0:
                ahead = began + index / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            log.info("flood record %d", start + index, extra={"n": start + index})
        return time.perf_counter() - began

    @isoplug.method
    async def fail(self, message: str) -> None:
        raise ValueError(message)

    @isoplug.method
    async def crash(self, code: int = 3) -> None:
        os._exit(code)
