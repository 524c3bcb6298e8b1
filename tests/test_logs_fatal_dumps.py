"""Crash dumps (faulthandler, ``Py_FatalError``) in text: one CRITICAL record, ending where the
dump's own structure ends, never taking in what the process prints next; a faulthandler
watchdog's dump (``dump_traceback_later``) likewise, at ERROR."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs.textlines import LineClassifier, TextRecord
from tests.plugins_fixtures import running

STDERR = "plugin.impostor.stderr"

# Dumps as CPython writes them (captured from 3.11, 3.12 and 3.13 on Linux; the free-threaded
# 3.14 one with a C stack as its documentation shows it; the Windows ones below), paths
# shortened.
MULTI_THREAD_311 = """\
Fatal Python error: Segmentation fault

Thread 0x00007faea66396c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 327 in wait
  File "/tmp/crash_mt.py", line 8 in worker
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007faea7c56b80 (most recent call first):
  File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at
  File "/tmp/crash_mt.py", line 12 in deep
  File "/tmp/crash_mt.py", line 15 in <module>

Extension modules: msgspec._core (total: 1)"""

FATAL_ERROR_313 = """\
Fatal Python error: _testcapi_fatal_error_impl: with exception
Python runtime state: initialized

Thread 0x00007fbd604746c0 (most recent call first):
  File "/usr/lib/python3.13/threading.py", line 359 in wait
  File "/usr/lib/python3.13/threading.py", line 1012 in _bootstrap

Current thread 0x00007fbd61019c40 (most recent call first):
  File "/tmp/fatal2.py", line 12 in <module>

Extension modules: _testcapi (total: 1)"""

# Py_FatalError with an exception pending prints it after the runtime state.
PENDING_EXCEPTION = """\
Fatal Python error: Failed to import encodings module
Python runtime state: core initialized
ModuleNotFoundError: No module named 'encodings'

Current thread 0x0000f688ac236d20 (most recent call first):
  <no Python frame>"""

FREE_THREADED_314 = """\
Fatal Python error: Segmentation fault

<Cannot show all threads while the GIL is disabled>
Stack (most recent call first):
  File "/usr/lib/python3.14t/ctypes/__init__.py", line 590 in string_at
  File "/src/t.py", line 9 in f
  ...

Current thread's C stack trace (most recent call first):
  Binary file "/usr/bin/python3.14t", at _Py_DumpStack+0x30 [0x4b53b0]
  <truncated rest of calls>"""

NAMED_THREADS_314 = """\
Fatal Python error: PyEval_RestoreThread: the GIL is released
Python runtime state: initialized

Thread 0x00006754 [Thread-8] (most recent call first):
  File "services/hotkey_listener.py", line 52 in run

Current thread 0x00007694 (most recent call first):
  Garbage-collecting
  File "program.py", line 274 in run"""

# Windows: faulthandler's exception handler (Modules/faulthandler.c, faulthandler_exc_handler)
# writes its own first line, a blank line, the stacks (thread ids of 8 hex digits), and on
# 3.14 the C stack it cannot get there; never "Extension modules:". Paths shortened.
WINDOWS_312 = """\
Windows fatal exception: access violation

Thread 0x00002b10 (most recent call first):
  File "C:\\Python312\\Lib\\threading.py", line 355 in wait
  File "C:\\Python312\\Lib\\threading.py", line 1073 in _bootstrap_inner
  File "C:\\Python312\\Lib\\threading.py", line 1030 in _bootstrap

Current thread 0x00001f84 (most recent call first):
  File "C:\\Python312\\Lib\\ctypes\\__init__.py", line 519 in string_at
  File "C:\\plugins\\shop\\shop.py", line 12 in crash"""

WINDOWS_314 = """\
Windows fatal exception: code 0xc0000409

Thread 0x00001234 [Thread-1 (worker)] (most recent call first):
  File "C:\\Python314\\Lib\\threading.py", line 373 in wait

Current thread 0x0000322c (most recent call first):
  File "C:\\plugins\\shop\\shop.py", line 113 in render

Current thread's C stack trace (most recent call first):
  <cannot get C stack on this system>"""

DUMPS = [
    MULTI_THREAD_311,
    FATAL_ERROR_313,
    PENDING_EXCEPTION,
    FREE_THREADED_314,
    NAMED_THREADS_314,
    WINDOWS_312,
    WINDOWS_314,
]


def classify(lines: list[str], default: int = logging.INFO, **options: bool) -> list[TextRecord]:
    classifier = LineClassifier(default, **options)
    records: list[TextRecord] = []
    for line in lines:
        records += classifier.feed(line)
    return records + classifier.flush()


def critical(dump: str) -> TextRecord:
    return TextRecord(logging.CRITICAL, dump, traceback=True)


@pytest.mark.parametrize("dump", DUMPS)
def test_a_dump_is_one_critical_record(dump: str) -> None:
    assert classify(dump.split("\n")) == [critical(dump)]


@pytest.mark.parametrize("dump", DUMPS)
def test_what_the_process_prints_after_a_dump_is_its_own(dump: str) -> None:
    """The first line that fits no part of a dump ends it and is classified afresh."""
    after = ["still running", "ERROR: disk full", "Traceback (most recent call last):"]
    after += ['  File "x.py", line 1, in f', "ValueError: x", "done"]
    records = classify([*dump.split("\n"), *after])
    assert records == [critical(dump), *classify(after)]


def test_a_windows_dump_then_a_signals_dump_are_two_records() -> None:
    """On Windows an exception other than an access violation can be dumped twice: by the
    exception handler, then by the signal handler the C runtime calls (faulthandler disables
    only the SIGSEGV one): each first line starts a record of its own."""
    signal_dump = MULTI_THREAD_311.replace("Segmentation fault", "Illegal instruction")
    records = classify([*WINDOWS_314.split("\n"), *signal_dump.split("\n")])
    assert records == [critical(WINDOWS_314), critical(signal_dump)]


def test_extension_modules_end_the_dump_at_once() -> None:
    """The dump's last line emits it: nothing waits for the stream to end or go quiet."""
    classifier = LineClassifier(logging.WARNING)
    *lines, last = MULTI_THREAD_311.split("\n")
    for line in lines:
        assert classifier.feed(line) == []
    assert classifier.holding
    assert classifier.feed(last) == [critical(MULTI_THREAD_311)]
    assert not classifier.holding
    assert classifier.feed('  File "x.py", line 3 in f') == [
        TextRecord(logging.WARNING, '  File "x.py", line 3 in f')
    ]


def test_a_quoted_first_line_takes_nothing_after_it() -> None:
    """A program that prints ``Fatal Python error: ...`` and lives on: that line is CRITICAL
    (on fd 2 it most likely is one), the next lines are its ordinary lines, at once."""
    classifier = LineClassifier(logging.INFO)
    assert classifier.feed("Fatal Python error: quoted") == []
    assert classifier.feed("line 1") == [
        TextRecord(logging.CRITICAL, "Fatal Python error: quoted", traceback=True),
        TextRecord(logging.INFO, "line 1"),
    ]
    for number in range(2, 6):
        assert classifier.feed(f"line {number}") == [TextRecord(logging.INFO, f"line {number}")]
    assert not classifier.holding


def test_indented_lines_belong_to_a_dump_only_under_a_stack_header() -> None:
    """A quoted first line, then indented prose: not a stack, so not the dump's."""
    lines = ["Fatal Python error: see below", "", "  an indented line", "Python runtime state: x"]
    assert classify(lines) == [
        TextRecord(logging.CRITICAL, "Fatal Python error: see below", traceback=True),
        TextRecord(logging.INFO, "  an indented line"),
        TextRecord(logging.INFO, "Python runtime state: x"),
    ]


def test_without_fatal_blocks_the_first_line_is_an_ordinary_one() -> None:
    """Text written through Python (a LogStream) never holds a real dump: there the line is a
    quotation, at the stream's level, and the lines after it are their own."""
    lines = MULTI_THREAD_311.split("\n")
    records = classify(lines, fatal_blocks=False)
    assert records == [TextRecord(logging.INFO, line) for line in lines]


_MORE_THREADS = """\
import threading, ctypes, sys, msgspec
ready = threading.Barrier(3)
def worker():
    ready.wait()
    threading.Event().wait()
for _ in range(2):
    threading.Thread(target=worker, daemon=True).start()
ready.wait()
def deep(n):
    if n == 0:
        ctypes.string_at(0)
    deep(n - 1)
deep(120)
"""
_FATAL_ERROR = """\
import ctypes, threading
threading.Thread(target=threading.Event().wait, daemon=True).start()
ctypes.pythonapi.Py_FatalError(b"from a test")
"""


@pytest.mark.parametrize("script", [_MORE_THREADS, _FATAL_ERROR], ids=["segfault", "fatal-error"])
def test_a_real_crash_of_this_interpreter_is_one_critical_record(script: str) -> None:
    """A child of this very interpreter crashes with faulthandler on (threads, a stack deeper
    than faulthandler prints, an extension module loaded): its whole stderr is one record."""
    child = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode < 0, child.stderr
    dump = child.stderr.rstrip("\n")
    assert dump.startswith("Fatal Python error: ")
    assert classify([*dump.split("\n"), "after the crash"]) == [
        critical(dump),
        TextRecord(logging.INFO, "after the crash"),
    ]


_ENDING = st.text(min_size=1, max_size=40).map(lambda text: "x" + text.replace("\n", " "))
_LINES = st.lists(st.text(max_size=60).map(lambda text: text.replace("\n", " ")), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(DUMPS), _ENDING, _LINES)
def test_lines_after_a_dumps_end_are_classified_as_without_it(
    dump: str, ending: str, lines: list[str]
) -> None:
    """Whatever follows the line that ends a dump, it comes out as it would with no dump."""
    assert classify([*dump.split("\n"), ending, *lines]) == [
        critical(dump),
        *classify([ending, *lines]),
    ]


@settings(max_examples=200, deadline=None)
@given(_LINES)
def test_lines_after_a_dumps_last_line_are_classified_as_without_it(lines: list[str]) -> None:
    """After ``Extension modules: ...``, even lines that look like a dump's are fresh."""
    assert classify([*MULTI_THREAD_311.split("\n"), *lines]) == [
        critical(MULTI_THREAD_311),
        *classify(lines),
    ]


# faulthandler.dump_traceback_later's dump, as 3.11 writes it (a watchdog thread, so no thread
# is the current one), paths shortened.
WATCHDOG_311 = """\
Timeout (0:00:00.050000)!
Thread 0x00007f3a1b7fe6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 327 in wait
  File "/tmp/hang.py", line 8 in worker

Thread 0x00007f3a1c9b4b80 (most recent call first):
  File "/usr/lib/python3.11/asyncio/base_events.py", line 1898 in _run_once
  File "/tmp/hang.py", line 12 in <module>"""


@pytest.mark.parametrize("header", ["Timeout (0:00:00.050000)!", "Timeout (1:02:03)!"])
def test_a_watchdogs_dump_is_one_error_record_and_what_follows_is_its_own(header: str) -> None:
    """A dump_traceback_later dump (the process lives on after it) is one record at ERROR;
    the first line that fits no dump ends it."""
    dump = WATCHDOG_311.replace("Timeout (0:00:00.050000)!", header)
    assert classify([*dump.split("\n"), "still running"]) == [
        TextRecord(logging.ERROR, dump, traceback=True),
        TextRecord(logging.INFO, "still running"),
    ]


@pytest.mark.parametrize(
    "line", ["Timeout (5s)!", "Timeout (0:00:05)! and more", "Timeout (0:00:05.5)!"]
)
def test_only_faulthandlers_own_timeout_header_starts_a_dump(line: str) -> None:
    lines = [line, "Thread 0x00007f3a1b7fe6c0 (most recent call first):"]
    assert classify(lines) == [TextRecord(logging.INFO, text) for text in lines]


def test_without_fatal_blocks_a_timeout_header_is_an_ordinary_line() -> None:
    """Printed through Python, a watchdog's header is a quotation, as a crash's is."""
    lines = WATCHDOG_311.split("\n")
    assert classify(lines, fatal_blocks=False) == [TextRecord(logging.INFO, t) for t in lines]


async def test_a_runners_watchdog_dump_is_one_record_on_its_stderr(tmp_path: Path) -> None:
    """A plugin's faulthandler.dump_traceback_later dumps its runner's threads to fd 2: the
    host's reader makes the whole dump one ERROR record of the plugin's stderr, its
    threads' stacks in it, and the plugin's next line on fd 2 a record of its own."""
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "watchdog_dump")
        dump = await waiter.wait_for(STDERR, "Timeout (0:00:00.050000)!")
        after = await waiter.wait_for(STDERR, "after the watchdog")
    # The host indents a record's continuation lines (isoplug.wire.sanitize).
    lines = [line.strip() for line in dump.getMessage().split("\n")]
    assert lines[0] == "Timeout (0:00:00.050000)!"
    assert dump.levelno == logging.ERROR
    headers = [line for line in lines if line.endswith("(most recent call first):")]
    assert headers and all(h.startswith("Thread 0x") for h in headers)
    assert any(line.startswith('File "') for line in lines)
    assert "after the watchdog" not in dump.getMessage()
    assert after.getMessage() == "after the watchdog" and after.levelno == logging.WARNING
