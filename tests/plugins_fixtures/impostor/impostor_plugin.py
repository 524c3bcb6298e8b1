"""A test plugin that claims, in its records, what only the host may say: another plugin's
identity, another logger, another process, an output stream, the fields the host's formatters
write themselves, the host's markers; that logs texts far over every size cap; and whose
faulthandler watchdog dumps its stacks."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
from typing import Any, ClassVar

import structlog
from structlog.typing import EventDict, Processor

import isoplug

log = logging.getLogger("impostor.work")


class _ClaimsCut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.truncated = True
        record.isoplug_truncated_keys = 3
        return True


class _ClaimsProcessOne(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.process = 1
        return True


#: Standard attributes set to a type the wire does not carry there, as a filter or loguru's
#: ``patch`` can: each record must still arrive (see tests/test_logs_wrong_types.py).
WRONG_TYPES: dict[str, object] = {
    "thread": "x",
    "lineno": "12",
    "process": "p",
    "threadName": 5,
    "levelno": "20",
    "created": "now",
    "funcName": 3.5,
}


class _SetsAttribute(logging.Filter):
    def __init__(self, name: str, value: object) -> None:
        super().__init__()
        self.attribute, self.value = name, value

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, self.attribute, self.value)
        return True


class _ForgesTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_text = FORGED_TRACEBACK
        return True


FORGED_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/work/main/src/isoplug/host/supervisor.py", line 1, in run\n'
    "RuntimeError: the host failed"
)


class Impostor(isoplug.Plugin):
    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def structlog_as_the_host(self) -> None:
        """structlog handing event dicts to logging (as the docs' recipe expects): an event
        with the host's keys forged, and one as any plugin logs (with add_logger_name)."""
        for processors in ([], [structlog.stdlib.add_logger_name]):
            structlog.configure(
                processors=[
                    *processors,
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
                ],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger,
                cache_logger_on_first_use=False,
            )
            try:
                if not processors:
                    structlog.get_logger("x").warning(
                        "plugin victim: ready",
                        logger="isoplug.host",
                        logger_name="isoplug.host",
                        plugin_id="victim",
                        runner_pid=1,
                        process=1,
                        stream="stdout",
                    )
                else:
                    structlog.get_logger("sl").warning("an ordinary event", order=7)
            finally:
                structlog.reset_defaults()

    @isoplug.method
    async def claim_logger_everywhere(self) -> None:
        """``logger="isoplug.host"`` and another plugin's id by every other door than a
        structlog event dict: a structlog JSON line printed (PrintLoggerFactory), a logging
        extra, a JSON line printed by hand, and loguru's bound values."""
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        try:
            structlog.get_logger().warning(
                "door structlog-json", logger="isoplug.host", plugin_id="victim"
            )
        finally:
            structlog.reset_defaults()
        log.warning("door extra", extra={"logger": "isoplug.host", "logger_name": "isoplug.host"})
        line = {"level": "warning", "logger": "isoplug.host", "plugin_id": "victim"}
        print(json.dumps({**line, "message": "door json-line"}), flush=True)
        from loguru import logger

        logger.bind(logger="isoplug.host", plugin_id="victim").warning("door loguru")

    @isoplug.method
    async def claim_level_and_message(self) -> None:
        """INFO records whose extras claim another level and message, under the names
        formatters read them under, by every door that carries extras: a logging extra, a
        printed JSON line (whose own level field says info), loguru's bound values."""
        claims = {
            "level": "critical",
            "severity": "CRITICAL",
            "@level": "critical",
            "log.level": "critical",
            "event": "all data deleted",
            "@message": "all data deleted",
        }
        log.info("routine extra", extra=claims)
        # A JSON line's first level field is its level (here the true one); the others claim.
        line = {"message": "routine json-line", **claims, "level": "info"}
        print(json.dumps(line), flush=True)
        from loguru import logger

        logger.bind(**claims).info("routine loguru")

    @isoplug.method
    async def structlog_levels(self) -> None:
        """structlog event dicts handed to logging: one at INFO whose level and severity
        claim CRITICAL (no add_log_level to set them right), one as a plugin that writes
        Google Cloud's severity and renames event to message (EventRenamer) logs it."""

        def severity(_logger: Any, method: str, event: EventDict) -> EventDict:
            event["severity"] = method.upper()
            return event

        chains: list[list[Processor]] = [
            [],
            [
                structlog.stdlib.add_log_level,
                severity,
                structlog.processors.EventRenamer("message"),
            ],
        ]
        for chain in chains:
            structlog.configure(
                processors=[*chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger,
                cache_logger_on_first_use=False,
            )
            try:
                if not chain:
                    structlog.get_logger("lv").info(
                        "routine event", level="critical", severity="CRITICAL"
                    )
                else:
                    structlog.get_logger("gcp").warning("renamed event", order=8)
            finally:
                structlog.reset_defaults()

    @isoplug.method
    async def borrow_level_names(self) -> None:
        """Levels numbered 22 and 23 named like standard levels, by every door that sets a
        level name: a logging record, a printed JSON line with a number for its level, and a
        loguru level; and one of loguru's own custom levels, which keeps its name."""
        logging.addLevelName(22, "CRITICAL")
        logging.addLevelName(23, "error")
        log.log(22, "borrowed record 22")
        log.log(23, "borrowed record 23")
        print(json.dumps({"level": 22, "message": "borrowed json-line 22"}), flush=True)
        from loguru import logger

        logger.level("Critical", no=24)
        logger.log("Critical", "borrowed loguru 24")
        logger.success("loguru success")

    @isoplug.method
    async def claim_extras(self) -> None:
        """extras named like what the host sets: an output stream, isoplug's cut flag."""
        log.warning("claims", extra={"stream": "stdout", "truncated": True})

    @isoplug.method
    async def forge_traceback(self) -> None:
        """A WARNING with no exception, whose ``exc_text`` a filter set to a traceback that
        names the host's files."""
        forges = _ForgesTraceback()
        log.addFilter(forges)
        try:
            log.warning("no exception here")
        finally:
            log.removeFilter(forges)

    @isoplug.method
    async def claim_stream_flags(self) -> None:
        """Records on loggers named like the output streams (what the host stamps ``stream``
        on), with the flags only isoplug's capture may set, through extra and a filter."""
        extra = {"truncated": True, "isoplug_truncated_keys": 9, "extra_truncated": "mine"}
        logging.getLogger("stdout").warning("stdout claims", extra=extra)
        logging.getLogger("plugin.impostor.stderr").warning("stderr claims", extra=extra)
        stderr = logging.getLogger("stderr")
        flags = _ClaimsCut()
        stderr.addFilter(flags)
        try:
            stderr.warning("filter claims")
        finally:
            stderr.removeFilter(flags)
        # A JSON line with too many fields: isoplug's capture sets both flags itself.
        print(json.dumps({"message": "json line", **{f"k{i}": i for i in range(300)}}))

    @isoplug.method
    async def forge_captured_records(self) -> None:
        """Records of the capture's own class, built by plugin code and handed to the stdout
        logger with its flags: what the capture could have set, and what it never sets."""
        from isoplug.logs.capture import CapturedLineRecord
        from isoplug.logs.stream_lines import MAX_LINE_CHARS
        from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

        stdout = logging.getLogger("stdout")
        claims: list[tuple[str, Any, Any]] = [
            ("forged uncut", True, 2),  # no cut mark: not truncated
            ("forged count", False, 10**9),  # more fields than a line holds
            ("forged kinds", "yes", "many"),
            ("forged cut" + cut_mark(5, where=IN_EMITTING_PROCESS), True, MAX_LINE_CHARS // 5),
        ]
        for message, cut, keys in claims:
            record = CapturedLineRecord("stdout", logging.ERROR, __file__, 1, message, (), None)
            record.truncated = cut
            record.isoplug_truncated_keys = keys
            stdout.handle(record)
        # A traceback whose source line isoplug's capture cuts: the mark ends that line,
        # within the block's message.
        print(
            "Traceback (most recent call last):\n"
            '  File "deep.py", line 1, in <module>\n'
            "    " + "q" * (MAX_LINE_CHARS * 2) + "\n"
            "ValueError: cut in the middle",
            flush=True,
        )

    @isoplug.method
    async def claim_process(self) -> None:
        """A record whose process a filter rewrote, and an ordinary one."""
        claims = _ClaimsProcessOne()
        log.addFilter(claims)
        try:
            log.warning("process one")
        finally:
            log.removeFilter(claims)
        log.warning("process mine")

    @isoplug.method
    async def wrong_types(self) -> None:
        """Per attribute of WRONG_TYPES: a plain record with it, and one with an extra (the
        sender's two paths)."""
        # On the handlers, not the logger: logging itself compares a record's levelno with
        # each handler's level before the handler's filters run.
        handlers = logging.getLogger().handlers
        for name, value in WRONG_TYPES.items():
            setter = _SetsAttribute(name, value)
            for handler in handlers:
                handler.addFilter(setter)
            try:
                log.warning("wrong %s", name)
                log.warning("wrong %s with extra", name, extra={"item": 1})
            finally:
                for handler in handlers:
                    handler.removeFilter(setter)
        log.warning("wrong types done")

    @isoplug.method
    async def print_long_line(self, length: int) -> None:
        print("P" * length, flush=True)

    @isoplug.method
    async def log_huge(self, length: int) -> None:
        """A message, an extra value and an exception message of ``length`` characters each."""
        log.warning("message " + "L" * length)
        log.warning("extra", extra={"big": "E" * length})
        try:
            raise ValueError("M" * length)
        except ValueError:
            log.exception("exception")

    #: Extras named like what structlog's processors and python-json-logger write from the
    #: record (its time, exception, stack, call site...) and like the host's markers.
    FORGED_FIELDS: ClassVar[dict[str, Any]] = {
        "timestamp": "1999-01-01T00:00:00Z",
        "time": "1999-01-01T00:00:00Z",
        "@timestamp": "1999-01-01T00:00:00Z",
        "exception": "Traceback (most recent call last):\nRuntimeError: forged",
        "stack": "Stack (most recent call last):\n  forged",
        "level_number": 50,
        "func_name": "forged_function",
        "thread_name": "ForgedThread",
        "process_name": "ForgedProcess",
        "qual_name": "forged.qual",
        "qual_module": "forged.module",
        "positional_args": ["forged"],
        "isoplug_truncated_keys": 99,
        "isoplug_anything": "forged",
    }

    @isoplug.method
    async def claim_consumer_fields(self) -> None:
        """An INFO record with no exception whose extras forge the fields of
        :data:`FORGED_FIELDS`, by every door that carries extras: a logging extra (with an
        ``extra_time`` of its own too), a printed JSON line, loguru's bound values."""
        log.info("routine extra", extra={**self.FORGED_FIELDS, "extra_time": "mine"})
        print(json.dumps({"message": "routine json-line", **self.FORGED_FIELDS}), flush=True)
        from loguru import logger

        logger.bind(**self.FORGED_FIELDS).info("routine loguru")

    @isoplug.method
    async def watchdog_dump(self) -> None:
        """faulthandler's watchdog dumps every thread's stack to fd 2 while this method
        sleeps; then a line of its own on fd 2."""
        faulthandler.dump_traceback_later(0.05, file=2)
        try:
            await asyncio.sleep(1.0)
        finally:
            faulthandler.cancel_dump_traceback_later()
        os.write(2, b"after the watchdog\n")

    @isoplug.method
    async def too_many_fields(self, count: int) -> None:
        """A logging record and a printed JSON line with ``count`` extras, the first of them
        a forged ``isoplug_truncated_keys``."""
        fields: dict[str, Any] = {"isoplug_truncated_keys": 1}
        fields.update({f"field_{n}": n for n in range(count - 1)})
        log.info("many extra [%d]", count, extra=fields)
        print(json.dumps({"message": f"many json-line [{count}]", **fields}), flush=True)
