"""A test plugin for the OpenTelemetry export: each method makes records of one kind and
returns what the test should find in the collector (line numbers, its pid)."""

from __future__ import annotations

import asyncio
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
    async def log_forged(self, marker: str) -> None:
        """One INFO whose extras claim the names of isoplug's own attributes and resource."""
        log.info(
            marker,
            extra={
                "service.name": "evil-svc",
                "isoplug.plugin.id": "victim",
                "isoplug.plugin.version": "9.9",
                "isoplug.runner.pid": 1,
                "isoplug.anything": "mine",
                "process.pid": 1,
                "team": "red",
                "log.iostream": "stderr",
                "exception.type": "Forged",
                "isoplug.log.seq": -1,
                "code.file.path": "/etc/shadow",
                "extra_code.file.path": "the plugin's own extra_ name",
            },
        )

    @isoplug.method
    async def log_disguised(self, marker: str) -> None:
        """One INFO whose extras spell reserved names as backends rewrite them (nested maps,
        ``_`` for ``.``, case), or as they look (a zero-width space, a Cyrillic ``i`` (U+0456)), or
        take other semantic-convention names; and ordinary extras that must keep theirs."""
        log.info(
            marker,
            extra={
                "isoplug": {"plugin": {"id": "victim"}, "log": {"seq": -1}},
                "service": {"name": "evil-svc"},
                "code": {"file": {"path": "/etc/shadow"}},
                "isoplug_plugin_id": "victim2",
                "service_name": "evil3",
                "process_pid": 1,
                "Service.Name": "evil4",
                "ISOPLUG.LOG.SEQ": -1,
                "isoplug\u200b.plugin.id": "victim5",
                "\u0456soplug.plugin.id": "victim6",
                " service.name": "evil7",
                "service.version": "6.6",
                "host.name": "evilhost",
                "deployment.environment": "prod",
                "code.filepath": "/etc/passwd",
                "code.lineno": 1,
                "Team": "red",
                "user_id": 7,
                "request": {"id": "r1", "code": 404},
                "order.total": 12.5,
                "host": "db1",
                "processing_time": 0.5,
            },
        )

    @isoplug.method
    async def log_odd_keys(self, marker: str) -> None:
        """One INFO whose extras have keys that are not text, at the top and nested."""
        log.info(
            marker,
            extra={
                1: "int-one",  # type: ignore[dict-item]
                ("t",): "tuple",  # type: ignore[dict-item]
                "mixed": {1: "int-one", "1": "str-one", ("t",): "tuple"},
            },
        )

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
    async def traced_log(self, marker: str) -> None:
        """One record from the call's task, one from a task it starts, one from to_thread."""
        log.info("%s from the call", marker)
        await asyncio.create_task(self._log_later(f"{marker} from a task"))
        await asyncio.to_thread(log.info, "%s from to_thread", marker)

    async def _log_later(self, text: str) -> None:
        log.info(text)

    @isoplug.method
    async def traced_print(self, marker: str) -> None:
        """A printed line from the call, and a multi-line block (a traceback-looking one takes
        the classifier's path) from a worker thread."""
        print(f"{marker} printed")
        await asyncio.to_thread(print, f"{marker} printed from a thread")

    @isoplug.method
    def traced_sync(self, marker: str) -> None:
        """Sync: logs from a worker thread."""
        log.info("%s from a worker thread", marker)

    @isoplug.method
    async def otel_state(self, marker: str) -> dict[str, Any]:
        """The opentelemetry modules this runner imported; and if the call came with a trace
        (so isoplug imported it), the current span, and a span of the plugin's own (started
        with the SDK, a record logged inside it) with its parent."""
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        if "opentelemetry.trace" not in sys.modules:
            return {"loaded": loaded}
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        current = trace.get_current_span().get_span_context()
        with TracerProvider().get_tracer("telemetry").start_as_current_span("work") as span:
            log.info("%s inside the plugin's span", marker)
        own = span.get_span_context()
        parent = span.parent  # type: ignore[attr-defined] # the SDK's span has it
        assert parent is not None
        return {
            "loaded": loaded,
            "current": [f"{current.trace_id:032x}", f"{current.span_id:016x}"],
            "own": [f"{own.trace_id:032x}", f"{own.span_id:016x}"],
            "parent": [f"{parent.trace_id:032x}", f"{parent.span_id:016x}"],
            "remote_parent": parent.is_remote,
        }

    @isoplug.on_event("telemetry.ping")
    async def on_ping(self, marker: str) -> None:
        log.info("%s from the event handler", marker)

    @isoplug.on_event("telemetry.ping")
    def on_ping_sync(self, marker: str) -> None:
        log.info("%s from the sync event handler", marker)

    @isoplug.method
    async def fail(self, message: str) -> None:
        raise ValueError(message)

    @isoplug.method
    async def crash(self, code: int = 3) -> None:
        os._exit(code)
