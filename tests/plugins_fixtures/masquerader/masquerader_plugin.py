"""A test plugin whose fields pass for what consumers show as a record's own (a structlog
event dict's keys, ECS, Datadog, OpenTelemetry and hclog names), that nests raw escapes and
bidi overrides inside its values, and whose extra keys clean to the same text."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import structlog

import isoplug

log = logging.getLogger("masq")
#: Consumer names by every door but a structlog event dict.
CONSUMER_FIELDS: dict[str, Any] = {
    "log.logger": "isoplug.host",
    "@module": "isoplug.host",
    "@caller": "host.py:1",
    "logger.name": "isoplug.host",
    "error.type": "KeyboardInterrupt",
    "error.message": "host crashed",
    "error.stack_trace": "Traceback (most recent call last): ...",
    "exception.type": "KeyboardInterrupt",
    "exception.message": "host crashed",
    "exception.stacktrace": "Traceback (most recent call last): ...",
    "code.function": "host_main",
    "thread.name": "MainThread",
    "process.pid": 1,
    "pid": 1,
    "Exc_Type": "KeyboardInterrupt",
    "error": {"kind": "KeyboardInterrupt"},
}
#: An escape, a C1 control, a bidi override, a line separator.
RAW = "\x1b[2J\x9b\u202e\u2028"


def _structlog() -> Any:
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("billing")


class Masquerader(isoplug.Plugin):
    @isoplug.method
    async def forge_event(self) -> None:
        """A structlog event dict claiming the record's fields and the host's stamps."""
        try:
            _structlog().info(
                "payment accepted",
                name="isoplug.host",
                asctime="1999-01-01 00:00:00,000",
                levelno=50,
                exc_type="isoplug.errors.PluginFailed",
                exc_message="host crashed",
                taskName="host-task",
                timestamp="1999-01-01T00:00:00Z",
                exception="Traceback (most recent call last):\nKeyboardInterrupt: forged",
                stack="forged stack",
                level_number=50,
                func_name="host_main",
                process_name="isoplug-host",
                positional_args=["x"],
                **CONSUMER_FIELDS,
            )
        finally:
            structlog.reset_defaults()

    @isoplug.method
    async def true_event(self) -> None:
        """A structlog event whose plugin-side processors wrote true values under reserved
        keys (TimeStamper, CallsiteParameterAdder, add_log_level_number)."""
        structlog.configure(
            processors=[
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.stdlib.add_log_level_number,
                structlog.processors.CallsiteParameterAdder(
                    [
                        structlog.processors.CallsiteParameter.FUNC_NAME,
                        structlog.processors.CallsiteParameter.THREAD_NAME,
                    ]
                ),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
        try:
            structlog.get_logger("billing").warning("true keys")
        finally:
            structlog.reset_defaults()

    @isoplug.method
    async def consumer_names(self) -> None:
        """The consumer names as a logging extra, a printed JSON line and loguru's bound
        values."""
        from loguru import logger

        log.info("door extra", extra=CONSUMER_FIELDS)
        print(json.dumps({"message": "door json", "level": "info", **CONSUMER_FIELDS}))
        sys.stdout.flush()
        logger.bind(**CONSUMER_FIELDS).info("door loguru")

    @isoplug.method
    async def nested(self) -> None:
        """Raw escapes inside nested values and keys, by every door."""
        from loguru import logger

        nest = {"k": RAW, RAW: 1, "l": [RAW, {"deeper": RAW}]}
        log.info("nested extra", extra={"data": nest})
        try:
            _structlog().info("nested event", data=nest)
        finally:
            structlog.reset_defaults()
        logger.patch(lambda r: r["extra"].update(data=nest)).info("nested loguru")
        deep: list[Any] = []
        for _ in range(1500):
            deep = [deep]
        log.info("deep extra", extra={"deep": deep})

    @isoplug.method
    async def colliding(self) -> None:
        """Extra keys that clean to the same text; reserved names beside their renamed
        spelling (loguru's bound values, a printed JSON line)."""
        from loguru import logger

        logger.bind(logger="claimed", extra_logger="own").info("colliding loguru")
        print(json.dumps({"message": "colliding json", "logger": "claimed", "extra_logger": "own"}))
        sys.stdout.flush()
        long = "a" * 100
        log.info(
            "colliding",
            extra={
                "\x1b": "value-1",
                "\\x1b": "value-2",
                long + "xy": "value-3",
                long + "zw": "value-4",
            },
        )
