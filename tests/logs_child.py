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
import logging.config
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


class WrongThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.thread = "x"  # type: ignore[assignment]
        return True


class ClaimsProcessOne(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.process = 1
        return True


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
    if "KERNEL_BUFFER" in os.environ:
        from isoplug.logs import sender_link

        sender_link.KERNEL_SEND_BUFFER = int(os.environ["KERNEL_BUFFER"])
    if os.environ.get("NO_RING"):
        # As without a ring (the ledger alone, as before rings): records wait in memory only.
        from isoplug.logs import handler as handler_module

        vars(handler_module)["ring_capacity"] = lambda queue_bytes: 0
    if "RECONNECT_DELAYS" in os.environ:
        # A first connection the receiver refused is tried again after each of these delays.
        from isoplug.logs import reconnect

        reconnect.RECONNECT_DELAYS = tuple(map(float, os.environ["RECONNECT_DELAYS"].split(",")))
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
    elif scenario == "claims-process-one":
        # A filter rewrites the record's process, as any code in the child can.
        claims = ClaimsProcessOne()
        log.addFilter(claims)
        log.info("process one", extra={"n": 0})
        log.removeFilter(claims)
    elif scenario == "wrong-thread":
        # A filter sets the thread to text: the plain record and one with an extra take the
        # sender's two paths.
        wrong = WrongThread()
        log.addFilter(wrong)
        log.info("thread x")
        log.info("thread x with extra", extra={"n": 0})
        log.removeFilter(wrong)
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
    elif scenario == "slow-exit":
        # COUNT DEBUG records, then $WARNINGS WARNINGs, into a queue of $QUEUE_BYTES and a
        # socket buffer of $KERNEL_BUFFER (set before connecting, below), to a receiver whose
        # handler is slow; then close within $CLOSE_TIMEOUT and say how long it took.
        handler.close()
        small = ForwardingHandler(
            os.environ["ISOPLUG_LOG_ADDRESS"],
            os.environ["ISOPLUG_LOG_TOKEN"],
            name="child-slow-exit",
            queue_bytes=int(os.environ["QUEUE_BYTES"]),
        )
        logging.getLogger().handlers[:] = [small]
        warnings = int(os.environ["WARNINGS"])
        for index in range(count):
            log.debug("debug %d", index, extra={"n": index})
        for index in range(count, count + warnings):
            log.warning("warning %d", index, extra={"n": index})
        began = time.monotonic()
        small.close(float(os.environ["CLOSE_TIMEOUT"]))
        print(f"closed in {time.monotonic() - began:.3f} s", flush=True)
    elif scenario == "flood-then":
        # The "flood" below, then the end $END: "exit" (normal), "os-exit", "sigkill-self".
        handler.close()
        small = ForwardingHandler(
            os.environ["ISOPLUG_LOG_ADDRESS"],
            os.environ["ISOPLUG_LOG_TOKEN"],
            queue_bytes=2048,
            write_through_rate=0.001,
        )
        logging.getLogger().handlers[:] = [small]
        for index in range(count):
            log.debug("debug %d", index, extra={"n": 3 * index})
            log.info("info %d", index, extra={"n": 3 * index + 1})
            log.warning("warning %d", index, extra={"n": 3 * index + 2})
        end = os.environ["END"]
        if end == "os-exit":
            os._exit(0)
        elif end == "sigkill-self":
            os.kill(os.getpid(), signal.SIGKILL)
    elif scenario == "pool-fork":
        # A pool whose workers inherit this process's handler by fork, and end normally.
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            pids = set(pool.map(pool_work, range(count)))
        print(f"workers {len(pids)}", flush=True)
    elif scenario == "fork-crash":
        # A process multiprocessing forks, which logs and then is killed: a real crash.
        import multiprocessing

        worker = multiprocessing.get_context("fork").Process(target=log_then_die)
        worker.start()
        worker.join()
        log.info("parent saw the worker end with %s", worker.exitcode)
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
    elif scenario == "loguru-forwarded":
        # forward_logs() (above, before loguru was imported) forwards loguru as records of
        # their own; called again once loguru is imported, it still forwards each message once.
        assert "loguru" not in sys.modules, "isoplug imported loguru"
        from loguru import logger as loguru_logger

        forward_logs(level=logging.DEBUG, name=f"child-{scenario}")
        loguru_logger.bind(user=42, request="r-1").info("hello {}", "loguru")
        loguru_logger.success("it worked")
        parts = ["s3cr3t"]
        try:
            parts[5]
        except IndexError:
            loguru_logger.exception("lookup failed")
    elif scenario == "ring-garbage":
        # A hostile sender: COUNT records that never leave (the send lock held), then its ring
        # garbled as $GARBAGE says, then gone.
        from isoplug.logs.ledger import ACKNOWLEDGED

        # Once the receiver has the ledger (and the ring) open, it can read them after we die.
        deadline = time.monotonic() + 30
        while not handler._ledger[ACKNOWLEDGED] and time.monotonic() < deadline:
            time.sleep(0.001)
        with handler._send_lock:
            numbered(count, 0, progress)
            garble_ring(handler, os.environ["GARBAGE"])
            os._exit(0)
    elif scenario == "raw-fork-exit":
        # forward_logs() with its default name, then os.fork(): the forked child logs COUNT
        # WARNINGs at once and ends with os._exit(0), with no flush and no close.
        handler.close()
        logging.getLogger().handlers[:] = []
        forward_logs(level=logging.DEBUG)
        pid = os.fork()
        if pid == 0:
            for index in range(count):
                log.warning("forked %d", index, extra={"n": index})
            os._exit(0)
        if os.environ.get("REAP_AFTER"):
            # The forked child stays a zombie until the test says: an ended process that
            # /proc still shows.
            wait_for_file(os.environ["REAP_AFTER"])
        os.waitpid(pid, 0)
        print(f"forked {pid}", flush=True)
    elif scenario == "dictconfig-exit":
        # A handler placed by dictConfig (no start(): it connects on the first record); COUNT
        # records at once, then os._exit(0).
        handler.close()
        logging.config.dictConfig(
            {
                "version": 1,
                # child.work exists already (this module's logger): keep it enabled.
                "disable_existing_loggers": False,
                "handlers": {
                    "fwd": {
                        "()": ForwardingHandler,
                        "address": os.environ["ISOPLUG_LOG_ADDRESS"],
                        "token": os.environ["ISOPLUG_LOG_TOKEN"],
                    }
                },
                "root": {"handlers": ["fwd"], "level": "DEBUG"},
            }
        )
        numbered(count, 0, None)
        os._exit(0)
    elif scenario == "fork-burst":
        fork_burst(handler, count)
    elif scenario == "levels":
        for index in range(count):
            log.debug("debug %d", index)
            log.info("info %d", index)
            log.warning("warning %d", index)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


def fork_burst(handler: ForwardingHandler, count: int) -> None:
    """HOLDERS forked children connect and hold their tree's places (this process holds one
    more); then COUNT children forked at once each log RECORDS numbered records and end at
    once (EXIT: ``os._exit`` or ``sys.exit``). The holders let go once every one of them has
    ended and the test created RELEASE_FILE."""
    holders, records = int(os.environ["HOLDERS"]), int(os.environ["RECORDS"])
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    held = []
    for _ in range(holders):
        pid = os.fork()
        if pid == 0:
            # Connected (welcomed) before it says it holds a place.
            os.write(ready_w, b"1" if handler.start(timeout=30) else b"0")
            os.read(release_r, 1)
            handler.close()
            os._exit(0)
        held.append(pid)
    answers = b"".join(os.read(ready_r, 1) for _ in range(holders))
    if answers != b"1" * holders:
        raise SystemExit(f"holders could not connect: {answers!r}")
    burst = []
    for child in range(count):
        pid = os.fork()
        if pid == 0:
            for index in range(records):
                number = child * records + index
                log.info("burst %d", number, extra={"n": number})
            if os.environ["EXIT"] == "os._exit":
                os._exit(0)
            sys.exit(0)
        burst.append(pid)
    for pid in burst:
        os.waitpid(pid, 0)
    print("burst ended", flush=True)
    wait_for_file(os.environ["RELEASE_FILE"])
    os.write(release_w, b"x" * holders)
    for pid in held:
        os.waitpid(pid, 0)
    print("burst over", flush=True)


def garble_ring(handler: ForwardingHandler, how: str) -> None:
    """Write into the ring what a hostile sender might (see scenario ring-garbage)."""
    from isoplug.logs.ledger import LEDGER_SIZE
    from isoplug.logs.ring import HEADER_BYTES

    ring, ledger = handler._ring, handler._shared_ledger
    assert ring is not None and ledger is not None
    words, data = ring._words, ring._data
    if how == "positions":
        words[2] = words[4] + 2**62  # an end far past the released position
    elif how == "count":
        words[3] = words[5] + 2**40  # more records than bytes
    elif how == "lengths":
        # The first record claims 4 Gi elements.
        data[ring.tail % ring.capacity : ring.tail % ring.capacity + 5] = b"\xdd\xff\xff\xff\xff"
    elif how == "bytes":
        data[:] = os.urandom(ring.capacity)
    elif how == "shrink":
        os.ftruncate(ledger.fd, LEDGER_SIZE + HEADER_BYTES + 100)
    else:
        raise SystemExit(f"unknown garbage {how!r}")


def log_then_die() -> None:
    logging.getLogger("pool.work").info("about to be killed", extra={"n": 0})
    # Connected, and the record sent: the connection the kill ends is there to see.
    logging.getLogger().handlers[0].flush()
    os.kill(os.getpid(), signal.SIGKILL)


def pool_work(n: int) -> int:
    """A pool task (importable by spawned workers): logs one numbered record."""
    logging.getLogger("pool.work").info("item %d", n, extra={"n": n})
    return os.getpid()


def pool_levels(n: int) -> int:
    """A pool task: one DEBUG, one INFO and one ERROR record, numbered."""
    log = logging.getLogger("pool.levels")
    log.debug("debug item %d", n, extra={"n": n})
    log.info("info item %d", n, extra={"n": n})
    log.error("error item %d", n, extra={"n": n})
    return os.getpid()


def configure_then_forward(address: str, token: str) -> None:
    """A pool initializer for a worker that configures its own logging (ERROR) first."""
    from isoplug.logs import forward_logs

    logging.basicConfig(level=logging.ERROR)
    forward_logs(address, token)


if __name__ == "__main__":
    main()
