"""A test plugin that configures logging for itself, on request, then logs and prints."""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import queue
import sys
import threading
import time
import warnings
from pathlib import Path

import isoplug

#: Created at import, before any configuration: a dictConfig() that does not name it disables it.
module_log = logging.getLogger("reconfigurer_plugin")
#: A library that gives its logger a console of its own at import, as some do.
library_console = logging.getLogger("thirdparty.console")
library_console.addHandler(logging.StreamHandler(sys.stderr))


def _fail() -> None:
    raise RuntimeError("disabled: uncaught in a thread")


class Boxed(logging.Handler):
    """Draws each record in a box, through a helper, as rich's RichHandler writes through its
    console; and fails on a record that asks it to, as a broken handler does."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "boxed: break the handler":
            try:
                raise RuntimeError("the box handler broke")
            except RuntimeError:
                self.handleError(record)
            return
        self._draw(self.format(record))

    def _draw(self, text: str) -> None:
        sys.stdout.write("+--------+\n")
        sys.stdout.write(f"| {text} |\n")
        sys.stdout.write("+--------+\n")


class Printing(logging.Handler):
    def __init__(self, bracketed: bool) -> None:
        super().__init__()
        self.bracketed = bracketed

    def emit(self, record: logging.LogRecord) -> None:
        if self.bracketed:  # what a level prefix looks like, to the host's reading of lines
            print(f"[{record.levelname}] PRINTED {self.format(record)}")
        else:
            print(f"PRINTED {record.levelname} {self.format(record)}")


class InterceptHandler(logging.Handler):
    """loguru's README recipe: every ``logging`` record goes on into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        from loguru import logger

        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


class FarIntercept(logging.Handler):
    """The same, through more helper calls than a handler's rendering is looked for in."""

    def emit(self, record: logging.LogRecord) -> None:
        self._one(record)

    def _one(self, record: logging.LogRecord) -> None:
        self._two(record)

    def _two(self, record: logging.LogRecord) -> None:
        self._three(record)

    def _three(self, record: logging.LogRecord) -> None:
        from loguru import logger

        logger.opt(exception=record.exc_info).log(record.levelname, record.getMessage())


class FailingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        raise RuntimeError("the formatter broke")


class Reconfigurer(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.tearing_down = threading.Event()

    async def teardown(self) -> None:
        self.tearing_down.set()

    def _log_everything(self, tag: str) -> None:
        logging.getLogger("thirdparty.lib").info("%s: info of a library", tag)
        self.ctx.logger.warning("%s: through ctx.logger", tag)
        print(f"{tag}: printed")
        sys.stderr.write(f"{tag}: written to stderr\n")
        try:
            raise ValueError(f"{tag}: boom")
        except ValueError:
            logging.getLogger("thirdparty.lib").exception("%s: failed", tag)

    @isoplug.method
    def basic_config_forced(self) -> None:
        logging.basicConfig(
            level=logging.DEBUG, force=True, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        self._log_everything("forced")

    @isoplug.method
    async def dict_config(self) -> None:
        logging.config.dictConfig(
            {
                "version": 1,
                "formatters": {"plain": {"format": "[%(levelname)s] %(name)s: %(message)s"}},
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "formatter": "plain",
                        "stream": "ext://sys.stdout",
                    }
                },
                "root": {"handlers": ["console"], "level": "DEBUG"},
            }
        )
        self._log_everything("dict")
        module_log.error("dict: the module's own logger, disabled by the configuration")

    @isoplug.method
    def file_only(self, path: str) -> None:
        logging.basicConfig(filename=path, force=True, level=logging.INFO)

    @isoplug.method
    def log_everything(self, tag: str) -> None:
        self._log_everything(tag)

    @isoplug.method
    def console_added(self) -> None:
        logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
        self._log_everything("added")

    @isoplug.method
    def library_consoles(self, tag: str, piped: bool) -> bool:
        """Log through the console the library added at import, and through one added now,
        once the runner may have seen it (in pipe mode, ``piped``, it says so within a second
        by putting its rendering stream under it); return whether it was seen."""
        library_console.warning("%s: from the library's console", tag)
        later = logging.StreamHandler(sys.stderr)
        logging.getLogger("thirdparty.later").addHandler(later)
        deadline = time.monotonic() + (10 if piped else 0)
        while type(later.stream).__name__ != "RenderingPipe" and time.monotonic() < deadline:
            time.sleep(0.05)
        logging.getLogger("thirdparty.later").warning("%s: from a console added later", tag)
        return type(later.stream).__name__ == "RenderingPipe"

    @isoplug.method
    def boxed_added(self) -> None:
        logging.getLogger().addHandler(Boxed())
        self._log_everything("boxed")
        logging.getLogger("thirdparty.lib").warning("boxed: break the handler")

    @isoplug.method
    def logging_disabled(self) -> None:
        """logging.disable() silences logging calls, nothing else, as in a program of its own."""
        logging.disable(logging.CRITICAL)
        try:
            logging.getLogger("thirdparty.lib").critical("disabled: a logging call")
            print("disabled: printed")
            sys.stderr.write("disabled: written to stderr\n")
            warnings.warn("disabled: a warning", stacklevel=1)
            thread = threading.Thread(target=_fail, name="failing")
            thread.start()
            thread.join()
        finally:
            logging.disable(logging.NOTSET)

    @isoplug.method
    def root_level_raised(self) -> None:
        logging.basicConfig(level=logging.ERROR, force=True)

    @isoplug.method
    def root_level_critical(self, how: str) -> None:
        """Raise the root's level to CRITICAL for the plugin's logging, as a script does."""
        if how == "basicConfig":
            logging.basicConfig(level=logging.CRITICAL, force=True)
        else:
            logging.getLogger().setLevel(logging.CRITICAL)

    @isoplug.method
    async def crash_reports(self, tag: str) -> None:
        """An uncaught exception in a thread, one in a __del__ and a task's never retrieved,
        then a CRITICAL record: it arrives after them (one connection, in order)."""

        def fail() -> None:
            raise RuntimeError(f"{tag}: uncaught in a thread")

        thread = threading.Thread(target=fail, name=f"{tag}-failing")
        thread.start()
        thread.join()

        class Doomed:
            def __del__(self) -> None:
                raise RuntimeError(f"{tag}: raised in __del__")

        Doomed()  # collected at once: its __del__ raises into sys.unraisablehook

        async def failing() -> None:
            raise RuntimeError(f"{tag}: never retrieved")

        task = asyncio.get_running_loop().create_task(failing())
        await asyncio.wait({task})
        del task  # its exception never retrieved: asyncio reports it as it is collected
        gc.collect()
        logging.getLogger("thirdparty.lib").critical("%s: marker", tag)

    @isoplug.method
    def output(self, tag: str) -> None:
        logging.getLogger("thirdparty.lib").warning("%s: a warning logged", tag)
        print(f"{tag}: printed")
        sys.stderr.write(f"{tag}: written to stderr\n")
        warnings.warn(f"{tag}: a warning", stacklevel=1)

    @isoplug.method
    def progress(self, tag: str) -> None:
        print(f"{tag} 0", end="\r", file=sys.stderr, flush=True)  # a status frame a CR ends
        for step in (1, 2, 3):
            sys.stderr.write(f"\r{tag} {step}")
            sys.stderr.flush()
        sys.stderr.write(f"\n{tag} waiting\rWARNING: {tag} disk full\n")

    @isoplug.method
    def stdout_rewrapped(self) -> None:
        """The idiom of scripts that want UTF-8 whatever the platform: a text stream of their
        own over sys.stdout's buffer, which holds lines until its buffer fills."""
        sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8")
        print("rewrapped: first line")
        print("rewrapped: second line")

    @isoplug.method
    def loguru_own_sink(self, keep_isoplugs: bool) -> None:
        """loguru's usual setup: every sink removed (isoplug's too, unless kept), one of the
        plugin's own on stderr, with its format."""
        from loguru import logger

        if not keep_isoplugs:
            logger.remove()
        sink = logger.add(sys.stderr, format="{time} | {level: <8} | {name} - {message}")
        try:
            tag = "kept" if keep_isoplugs else "own"
            logger.bind(user="ann").success("{}: loguru success", tag)
            try:
                raise ValueError(f"{tag}: loguru boom")
            except ValueError:
                logger.exception("{}: loguru failed", tag)
        finally:
            logger.remove(sink)

    @isoplug.method
    def structlog_default(self, stamp: str = "date") -> None:
        """structlog as it comes: ConsoleRenderer, printed by its PrintLogger; its lines start
        with the date (``stamp`` "date", the default), a clock ("clock") or the level
        ("none")."""
        import structlog

        structlog.reset_defaults()
        if stamp != "date":
            processors = [
                p
                for p in structlog.get_config()["processors"]
                if not isinstance(p, structlog.processors.TimeStamper)
            ]
            if stamp == "clock":
                processors.insert(-1, structlog.processors.TimeStamper(fmt="%H:%M:%S"))
            structlog.configure(processors=processors)
        log = structlog.get_logger().bind(user="ann")
        log.info("sl: info", step=1)
        log.error("sl: error", code=42)
        try:
            raise ValueError("sl: boom")
        except ValueError:
            log.exception("sl: failed")

    @isoplug.method
    def printing_handler(self, bracketed: bool) -> None:
        """A handler that print()s each record, on a logger isoplug's handler is not above."""
        audit = logging.getLogger("audit")
        audit.propagate = False
        audit.addHandler(Printing(bracketed))
        audit.setLevel(logging.INFO)
        audit.warning("printed: audit warning")
        audit.info("printed: audit info")

    @isoplug.method
    def handlers_removed_by_hand(self, path: str) -> None:
        """The idiom of scripts older than basicConfig(force=True): every root handler taken
        off by hand (none closed), then a configuration of the plugin's own, to a file."""
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        logging.basicConfig(filename=path, level=logging.INFO)

    @isoplug.method
    def file_contents(self, path: str) -> str:
        for handler in logging.getLogger().handlers:
            handler.flush()
        return Path(path).read_text()

    @isoplug.method
    def loguru_intercepted(self, tag: str, own_sink: bool, enqueue: bool = False) -> None:
        """loguru's InterceptHandler as the root's only handler (loguru's README: every
        record into loguru), with loguru's sink isoplug's or, ``own_sink``, one of the
        plugin's own on stderr (``enqueue``: written by loguru's own thread, isoplug's sink
        kept unless ``own_sink``); then everything logged, and a direct loguru call."""
        from loguru import logger

        if own_sink:
            logger.remove()
        sink = None
        if own_sink or enqueue:
            sink = logger.add(
                sys.stderr, format="{time} | {level: <8} | {name} - {message}", enqueue=enqueue
            )
        logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
        self._log_everything(tag)
        logger.info("{}: loguru directly", tag)
        if enqueue and sink is not None:
            # What loguru's thread has still to write, written before the call returns.
            logger.complete()

    @isoplug.method
    def configured_holding_logging(self, hold: float) -> None:
        """``basicConfig(force=True)`` in a daemon thread that holds logging's lock until
        ``hold`` seconds after the teardown began: isoplug's thread that says what the
        configuration did waits for that lock (as it may wait for the CPU on a loaded
        machine) until then."""
        configured = threading.Event()

        def configure_and_hold() -> None:
            with logging._lock:  # type: ignore[attr-defined]
                logging.basicConfig(handlers=[logging.NullHandler()], force=True)
                configured.set()
                self.tearing_down.wait(60)
                time.sleep(hold)

        threading.Thread(target=configure_and_hold, daemon=True).start()
        configured.wait(60)

    @isoplug.method
    def loguru_removed(self) -> None:
        """loguru's sinks all removed (isoplug's too), as a setup does before it adds its own."""
        from loguru import logger

        logger.remove()

    @isoplug.method
    def loguru_own_sink_added(self, tag: str, enqueue: bool) -> None:
        """A sink of the plugin's own on stderr added (after :meth:`loguru_removed`), then a
        direct loguru call."""
        from loguru import logger

        logger.add(sys.stderr, format="{time} | {level: <8} | {name} - {message}", enqueue=enqueue)
        logger.info("{}: loguru directly", tag)
        if enqueue:
            logger.complete()

    @isoplug.method
    def loguru_two_sinks(self, tag: str) -> None:
        """loguru's README setup: sinks of the plugin's own on stderr and on stdout, each
        writing every message."""
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, format="{time} {level} {message}", level="INFO")
        logger.add(
            sys.stdout, colorize=True, format="<green>{time}</green> <level>{message}</level>"
        )
        logger.bind(user="ann").warning("{}: written by two sinks", tag)

    @isoplug.method
    def loguru_intercepted_far(self, tag: str) -> None:
        """An intercepting handler whose loguru call is too far below its emit() to be told
        apart: a record of it meets that handler again, once, inside its own handing out."""
        logging.getLogger().addHandler(FarIntercept())
        logging.getLogger("thirdparty.lib").warning("%s: far intercepted", tag)

    @isoplug.method
    def failing_console(self, tag: str) -> None:
        """A console handler whose formatter raises, on the root beside isoplug's, for one
        record logged through it (plain Python prints one '--- Logging error ---' report)."""
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(FailingFormatter())
        root = logging.getLogger()
        root.addHandler(console)
        try:
            logging.getLogger("thirdparty.lib").warning("%s: through a broken console", tag)
        finally:
            root.removeHandler(console)

    @isoplug.method
    def handlers_cleared(self, tag: str, last_resort: bool) -> None:
        """The root's handlers cleared (and, unless ``last_resort``, logging's last resort
        gone); then a print, a stderr write, a warning and an uncaught exception in a thread,
        which a program of its own shows whatever its logging."""
        if not last_resort:
            logging.lastResort = None
        logging.getLogger().handlers.clear()
        print(f"{tag}: printed")
        sys.stderr.write(f"{tag}: written to stderr\n")
        warnings.warn(f"{tag}: a warning", stacklevel=1)
        thread = threading.Thread(target=_raise, args=(f"{tag}: uncaught",), name="failing")
        thread.start()
        thread.join()

    @isoplug.method
    def logging_shut_down(self) -> None:
        """logging.shutdown() outside any exit, as a reused main() of a script does."""
        logging.shutdown()

    @isoplug.method
    def failing_child(self, tag: str) -> int:
        """A multiprocessing child (fork) that logs and then raises; its pid once it ended."""
        child = multiprocessing.get_context("fork").Process(target=_log_and_raise, args=(tag,))
        child.start()
        child.join(30)
        assert child.pid is not None
        return child.pid

    @isoplug.method
    def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    def basic_config_unforced(self, how: str, path: str = "") -> list[str]:
        """The script idiom, without force=True: to a file at WARNING (``how`` "file"), to
        stderr (``"stderr"``) or to ``sys.stdout`` (``"stdout"``), then a second call that
        finds the first's handler; then everything logged. The root's handlers' types."""
        if how == "file":
            logging.basicConfig(filename=path, level=logging.WARNING, format="FILE %(message)s")
        else:
            stream = sys.stdout if how == "stdout" else None
            logging.basicConfig(stream=stream, format="CONSOLE %(levelname)s %(message)s")
        logging.basicConfig(stream=sys.stdout, level=logging.CRITICAL)  # does nothing
        self._log_everything(f"unforced-{how}")
        return [type(handler).__name__ for handler in logging.getLogger().handlers]

    @isoplug.method
    async def queued_root(self, tag: str) -> None:
        """The root's handlers replaced by a QueueHandler whose QueueListener feeds a console,
        then output of every kind, each written by the listener's thread before this returns
        (on the event loop: the runner cannot put its handler back meanwhile)."""
        records: queue.Queue[logging.LogRecord] = queue.Queue()
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("QL %(levelname)s %(name)s %(message)s"))
        listener = logging.handlers.QueueListener(records, console)
        listener.start()
        logging.getLogger().handlers = [logging.handlers.QueueHandler(records)]
        try:
            print(f"{tag}: printed")
            sys.stderr.write(f"{tag}: written to stderr\n")
            warnings.warn(f"{tag}: a warning", stacklevel=1)
            logging.getLogger("thirdparty.lib").warning("%s: logged", tag)
        finally:
            listener.stop()

    @isoplug.method
    def loguru_to_file(self, path: str, tag: str) -> None:
        """loguru to a file of the plugin's own only: every sink removed, isoplug's too."""
        from loguru import logger

        logger.remove()
        logger.add(path, format="{level} {message}")
        logger.error("{}: while isoplug's sink was gone", tag)

    @isoplug.method
    def loguru_to_nowhere(self, tag: str) -> None:
        """Every loguru sink removed, isoplug's too, and none added: two messages reach none."""
        from loguru import logger

        logger.remove()
        logger.info("{}: info with no sink", tag)
        logger.error("{}: error with no sink", tag)

    @isoplug.method
    def loguru_error(self, tag: str) -> None:
        from loguru import logger

        logger.error("{}: logged with loguru", tag)


def _raise(text: str) -> None:
    raise ValueError(text)


def _log_and_raise(tag: str) -> None:
    logging.getLogger("thirdparty.child").warning("%s: logged", tag)
    raise RuntimeError(f"{tag}: uncaught")
