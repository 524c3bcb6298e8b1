"""Shared test plumbing: ``async def`` tests run in a fresh event loop, and nothing may leak."""

from __future__ import annotations

import asyncio
import compileall
import gc
import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import isoplug

#: An async test that takes longer than this is hung; fail it with a traceback.
ASYNC_TEST_TIMEOUT = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with ``asyncio.run`` so no plugin is needed."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run() -> None:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
            await function(**arguments)
        # Every task a test started must be finished when it ends: a leftover is a leak.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftovers, f"tasks leaked by the test: {leftovers}"

    asyncio.run(run())
    return True


def _open_fds() -> set[int]:
    return (
        {int(fd) for fd in os.listdir("/proc/self/fd")} if os.path.isdir("/proc/self/fd") else set()
    )


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves file descriptors open."""
    gc.collect()
    before = _open_fds()
    yield
    gc.collect()
    leaked = _open_fds() - before
    details = {}
    for fd in leaked:
        try:
            details[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            details[fd] = "?"
    assert not leaked, f"file descriptors leaked: {details}"


@pytest.fixture
def private_temp() -> Iterator[str]:
    """A temp folder of its own (short, for socket paths): a host or receiver started by a test
    running alongside removes a dead host's socket folders from the shared one."""
    path = tempfile.mkdtemp(prefix="iso-k9-", dir="/tmp")
    yield path
    shutil.rmtree(path)


@pytest.fixture(autouse=True)
def _unraisable_is_an_error() -> Iterator[None]:
    """Turn 'Task was destroyed but it is pending' and similar into visible failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        yield


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """Put the root logger's handlers and level back after each test. The CLI's main(),
    called in-process, sets a handler on the stdout that capsys gives it; once pytest closed
    that stream, the handler failed on every later record, which printed '--- Logging error
    ---' for each one (85.9 MB in one run) and slowed the log tests past their waits."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnraisableExceptionWarning")
    _write_isoplug_bytecode()


def _write_isoplug_bytecode() -> None:
    """Write isoplug's bytecode before the tests start the interpreters that import it: a
    zygote for each host, spawned runners, helper processes, CLI runs. Where
    PYTHONDONTWRITEBYTECODE is set (as on the machine that runs CI) none of them writes it, so
    that each one compiled the ~250 modules of the runner stack again: a host took 0.25 s to
    its first ready runner instead of 0.15 s, and the host and plugin tests 125 s instead of
    94. Up to date, this is a stat per module."""
    compileall.compile_dir(Path(isoplug.__file__).parent, quiet=1)
