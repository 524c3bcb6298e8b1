"""loguru in a forwarding child: its messages arrive as records of their own (see "loguru" in
docs/forwarding.md)."""

from __future__ import annotations

import logging

import pytest

from tests.processes import run_python
from tests.test_logs_forwarding import BOTH_MODES, PREFIX, finish, receiving, run_child


@BOTH_MODES
async def test_forward_logs_forwards_loguru_as_records_of_their_own(mode: str) -> None:
    """A child that uses loguru calls forward_logs() (before importing loguru, and again
    after): loguru's messages arrive once each as records of their own, as a plugin's do.
    Handed to a ForwardingHandler as a sink (the recipe the docs gave), a message was
    loguru's whole line (time, level, module:function:line), the bound values one nested
    ``extra`` dict, the traceback baked into the message with the values of its variables;
    and loguru's default sink printed it all on the child's stderr too."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "loguru-forwarded")
        code, stderr = await finish(child)
        await collector.wait_until(lambda: "lookup failed" in collector.messages())
    assert code == 0, stderr
    assert stderr == ""  # loguru's default sink replaced, not printing too
    forwarded = [r for r in collector.records if not getattr(r, "isoplug_report", False)]
    assert [r.getMessage() for r in forwarded] == ["hello loguru", "it worked", "lookup failed"]
    hello, worked, failed = forwarded
    assert hello.name == f"{PREFIX}.__main__" and hello.funcName == "main"
    assert hello.levelname == "INFO"
    assert (hello.user, hello.request) == (42, "r-1")  # type: ignore[attr-defined]
    assert not hasattr(hello, "extra")
    assert (worked.levelno, worked.levelname) == (25, "SUCCESS")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info is not None
    kind = failed.exc_info[0]
    assert kind is not None and kind.__name__ == "IndexError"
    text = logging.Formatter("%(message)s").format(failed)
    assert text.count("IndexError: list index out of range") == 1
    assert "s3cr3t" not in text  # no variable values (loguru's diagnose)


_SINK_ADDED_DURING_A_RESTORE = """
import multiprocessing.context, sys, threading
from loguru import logger
from isoplug.logs import loguru_bridge

loguru_bridge.forward_loguru()
logger.remove()  # every sink, the bridge's too: as a program's setup starts
building, go = threading.Event(), threading.Event()


class SlowContext(multiprocessing.context.SpawnContext):
    # loguru builds an enqueue=True sink's queue while it holds its lock, before the sink is
    # in its list: this holds the program's add() there.
    def SimpleQueue(self):
        building.set()
        go.wait(30)
        return super().SimpleQueue()


adder = threading.Thread(
    target=logger.add, args=(sys.stderr,), kwargs={"enqueue": True, "context": SlowContext()}
)
adder.start()
building.wait(30)
restorer = threading.Thread(target=loguru_bridge.restore_bridge_sink)
restorer.start()
while restorer.is_alive():  # until it returned, or waits for loguru's lock
    frame = sys._current_frames().get(restorer.ident)
    while frame is not None and not frame.f_code.co_filename.endswith("loguru/_logger.py"):
        frame = frame.f_back
    if frame is not None:
        break
    restorer.join(0.001)
go.set()
adder.join()
restorer.join()
sinks = list(logger._core.handlers)
bridge = loguru_bridge.bridge_sinks[-1][1]
print("bridge first" if sinks[0] == bridge else "bridge absent" if bridge not in sinks
      else "bridge after the program's sink")
print(loguru_bridge.restore_bridge_sink())
logger.complete()
"""


def test_a_console_sink_added_while_isoplug_looks_is_not_overtaken() -> None:
    """A program adds its console sink right after ``logger.remove()`` while the runner looks
    whether to put the bridge's sink back: the bridge's is not added behind the program's
    (loguru lets a sink of ``enqueue=True`` take a while to be added; the look saw no sink,
    added the bridge's after it, and each message of the program's then arrived twice);
    once the program's console sink is in, none is added."""
    pytest.importorskip("loguru")
    done = run_python(_SINK_ADDED_DURING_A_RESTORE)
    assert done.returncode == 0, done.stderr
    placed, restored = done.stdout.splitlines()
    assert placed in ("bridge first", "bridge absent"), done.stdout
    assert restored == "None"


_ADDS_WHILE_FORKING = """
import os, threading
import isoplug.logs.loguru_sinks as loguru_sinks  # its fork handler first, as in a runner
import loguru
from loguru import logger

loguru_sinks.add_sinks_one_at_a_time(loguru)
forks = threading.Event()


def add_and_remove():
    for _ in range(300):
        logger.remove(logger.add(lambda message: None))


def fork():
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


threads = [threading.Thread(target=add_and_remove), threading.Thread(target=fork)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("done")
"""


def test_sinks_added_while_another_thread_forks_never_hang() -> None:
    """A thread adding and removing loguru sinks while another forks: both go on (the turn
    the adds take, a lock, was taken before each fork too, and loguru's own fork handler,
    which takes its lock first, waited for it while an add held it and waited for loguru's:
    the fork and the add hung for good)."""
    pytest.importorskip("loguru")
    done = run_python(_ADDS_WHILE_FORKING, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
