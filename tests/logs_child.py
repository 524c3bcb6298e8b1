"""A child process for log-forwarding tests; ``python tests/logs_child.py SCENARIO [N]``.

It forwards its logs with :func:`isoplug.logs.forward_logs` (address and token from the
environment) and then plays one scenario. Records of numbered scenarios carry ``extra={"n": i}``
and every emitted number is also written to the file named by ``$PROGRESS_FILE`` (when set)
*after* the ``logger.info`` call returns, so a test that kills the child knows exactly which
records had been emitted.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import logging
import os
import signal
import sys
import time


def _logged_after_isoplug_closed() -> None:
    logging.getLogger("child").error("logged after the forwarder closed")


if sys.argv[1:2] == ["shutdown-logging"]:
    # Registered before isoplug is imported, so it runs after isoplug's own exit hook.
    atexit.register(_logged_after_isoplug_closed)

from isoplug.logs import ForwardingHandler, forward_logs  # noqa: E402

log = logging.getLogger("child.work")


def numbered(count: int, rate: float, progress: int | None) -> None:
    interval = 1.0 / rate if rate else 0.0
    next_time = time.perf_counter()
    for index in range(count):
        log.info("record %d", index, extra={"n": index})
        if progress is not None:
            os.pwrite(progress, index.to_bytes(8, "little"), 0)
        if interval:
            # No catching up after the machine paused us: the rate never exceeds RATE.
            next_time = max(next_time + interval, time.perf_counter())
            while time.perf_counter() < next_time:
                pass


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    """Wait until the test creates ``path`` (its signal that a step is done)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.01)


def main() -> None:
    scenario = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rate = float(os.environ.get("RATE", "0"))
    handler = forward_logs(level=logging.DEBUG, name=f"child-{scenario}")
    progress_path = os.environ.get("PROGRESS_FILE")
    progress = os.open(progress_path, os.O_RDWR) if progress_path else None

    if scenario == "clean-exit":
        numbered(count, rate, progress)
    elif scenario == "uncaught":
        numbered(count, rate, progress)

        def hook(kind: type[BaseException], error: BaseException, tb: object) -> None:
            logging.getLogger("child").critical("uncaught", exc_info=(kind, error, tb))  # type: ignore[arg-type]

        sys.excepthook = hook
        raise RuntimeError("the plugin blew up")
    elif scenario == "os-exit":
        numbered(count, rate, progress)
        os._exit(0)
    elif scenario == "sigkill-self":
        numbered(count, rate, progress)
        os.kill(os.getpid(), signal.SIGKILL)
    elif scenario == "segfault":
        import faulthandler

        faulthandler.enable()
        numbered(count, rate, progress)
        ctypes.string_at(0)
    elif scenario == "until-killed":
        # Logs at RATE until killed from outside.
        numbered(10**9, rate, progress)
    elif scenario == "blocked-loop":

        async def block() -> None:
            log.warning("about to block the event loop")
            deadline = time.monotonic() + 30
            # A plugin that blocks its loop; the test tells us (by a file) when it saw the
            # record above, which proves the logs did not wait for the loop.
            while time.monotonic() < deadline and not os.path.exists(os.environ["RELEASE_FILE"]):
                time.sleep(0.01)
            log.warning("unblocked")

        asyncio.run(block())
    elif scenario == "fork":
        log.info("parent before fork")
        pid = os.fork()
        if pid == 0:
            log.info("hello from the forked child")
            handler.flush(5)
            os._exit(0)
        os.waitpid(pid, 0)
        log.info("parent after fork")
    elif scenario == "shutdown-logging":

        @atexit.register
        def late() -> None:  # registered last, so it runs first, before isoplug closes
            logging.getLogger("child").error("logged during interpreter shutdown")

        log.info("normal record")
    elif scenario == "lossless":
        # A queue of 4 KiB holds a few dozen records: everything else waits for room.
        handler.close()
        lossless = ForwardingHandler(
            os.environ["ISOPLUG_LOG_ADDRESS"],
            os.environ["ISOPLUG_LOG_TOKEN"],
            queue_bytes=4096,
            block_when_full=True,
            block_timeout=30,
            write_through_rate=0.001,
        )
        logging.getLogger().handlers[:] = [lossless]
        numbered(count, 0, None)
    elif scenario == "flood":
        # Write-through off and a 2 KiB queue (a few records): a burst must overflow it.
        handler.close()
        small = ForwardingHandler(
            os.environ["ISOPLUG_LOG_ADDRESS"],
            os.environ["ISOPLUG_LOG_TOKEN"],
            queue_bytes=2048,
            write_through_rate=0.001,
        )
        logging.getLogger().handlers[:] = [small]
        for index in range(count):
            log.debug("debug %d", index, extra={"n": index})
            log.info("info %d", index, extra={"n": index})
            log.warning("warning %d", index, extra={"n": index})
    elif scenario == "reconnect":
        # The receiver goes away and comes back at the same address: numbered records before,
        # a burst while it is away (more than the 2 KiB queue holds), and records after.
        from isoplug.logs import reconnect

        # Keep trying for as long as the test may take to bring the receiver back.
        reconnect.RECONNECT_DELAYS = (0.0,) + (0.02,) * 3000
        reconnect.GONE_AFTER_REFUSALS = 10**9
        handler.close()
        small = ForwardingHandler(
            os.environ["ISOPLUG_LOG_ADDRESS"],
            os.environ["ISOPLUG_LOG_TOKEN"],
            name="child-reconnect",
            queue_bytes=2048,
        )
        logging.getLogger().handlers[:] = [small]
        steps = os.environ["STEP_DIR"]
        for index in range(3):
            log.info("before %d", index, extra={"n": index})
        wait_for_file(f"{steps}/receiver-gone")
        for index in range(3, 3 + count):
            log.info("while away %d", index, extra={"n": index})
        print("burst logged", flush=True)
        wait_for_file(f"{steps}/receiver-back")
        # What the full queue held goes out first: the next records find room.
        small.flush(30)
        for index in range(3 + count, 6 + count):
            log.info("after %d", index, extra={"n": index})
    elif scenario == "loguru":
        from loguru import logger as loguru_logger

        # loguru takes any logging.Handler as a sink; it builds the LogRecord itself.
        loguru_logger.remove()
        loguru_logger.add(handler, format="{message}")
        loguru_logger.bind(user=42).info("hello {}", "loguru")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            loguru_logger.exception("loguru caught it")
    elif scenario == "levels":
        for index in range(count):
            log.debug("debug %d", index)
            log.info("info %d", index)
            log.warning("warning %d", index)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


def pool_work(n: int) -> int:
    """A pool task (importable by spawned workers): logs one numbered record."""
    logging.getLogger("pool.work").info("item %d", n, extra={"n": n})
    return os.getpid()


if __name__ == "__main__":
    main()
