"""In a runner the zygote just forked: take what ``exec`` gives a spawned runner, before any of
the runner's or its plugins' code runs (see :mod:`isoplug.runner.zygote`).

- The host's umask and resource limits at the fork (:func:`take_host_settings`), from the
  zygote's order: the zygote's are the host's of when it started.
- The runner's environment (:func:`adopt_environment`), read from its own stdin ahead of its
  bootstrap line, never from the zygote, whose memory every runner forked later copies:
  ``os.environ`` replaced (the C library's environment with it, which child processes get),
  its tag written into the environment block (:func:`_stamp_environment_block`), and the time
  zone read again from ``TZ`` (``time.tzset()``), which ``time`` read in the zygote.
- The zygote's objects, frozen (``gc.freeze()``: a collection in the runner does not write to
  the pages it shares with the zygote), are unfrozen at the runner's first
  ``gc.get_objects()`` or ``gc.get_referrers()`` (:func:`unfreeze_when_looked_at`): a leak
  hunt (objgraph, pympler) sees every object, as in a spawned runner.

What the process fixed at its start from the environment (``PYTHON*``, the locale's
encodings, the dynamic loader's ``LD_LIBRARY_PATH``, the C library's tunables) cannot be
changed here: the host spawns a runner whose values of those differ from the zygote's
(isoplug.host.fork_order.STARTUP_VARIABLES).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from isoplug.control.zygote import MAX_FORKED_ENVIRONMENT_BYTES, ForkedEnvironment

__all__ = ["adopt_environment", "take_host_settings", "unfreeze_when_looked_at"]

#: The length that leads the environment on stdin (isoplug.host.fork_order).
_LENGTH_BYTES = 4
_RESOURCE_NAMES = {
    getattr(resource, name): name for name in dir(resource) if name.startswith("RLIMIT_")
}


def take_host_settings(umask: int, rlimits: Sequence[tuple[int, int, int]]) -> None:
    """Set the host's ``umask`` and resource limits (``(resource, soft, hard)``) on this
    process. A limit the kernel refuses is said on stderr (which the host reads as this
    runner's) and left as it was: the runner still runs."""
    os.umask(umask)
    for number, soft, hard in rlimits:
        try:
            if resource.getrlimit(number) != (soft, hard):
                resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError) as exc:
            name = _RESOURCE_NAMES.get(number, f"resource {number}")
            print(
                f"isoplug runner: cannot take the host's {name} ({soft}, {hard}), keeping "
                f"the zygote's: {exc}",
                file=sys.stderr,
            )


#: The collector's functions that see no frozen object, which unfreeze the zygote's first.
_LOOKS = ("get_objects", "get_referrers")


def unfreeze_when_looked_at() -> None:
    """Have the first call of ``gc.get_objects()`` or ``gc.get_referrers()`` unfreeze the
    zygote's objects first: they see no frozen object, and a forked runner would show a plugin
    hunting a leak a fraction of its objects (1 module of some 350). Not at once: until then
    the runner's collections leave the pages it shares with the zygote alone. Once only: what
    the plugin freezes itself later stays frozen, as in a spawned runner."""
    originals = {name: getattr(gc, name) for name in _LOOKS}

    def unfreeze_once() -> None:
        if gc.get_objects is not originals["get_objects"]:
            for name, look in originals.items():
                setattr(gc, name, look)
            gc.unfreeze()

    for name, look in originals.items():
        setattr(gc, name, _after(unfreeze_once, look))


def _after(first: Callable[[], None], look: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    @functools.wraps(look)
    def unfrozen_look(*args: Any, **kwargs: Any) -> list[Any]:
        first()
        return look(*args, **kwargs)

    return unfrozen_look


def adopt_environment() -> bool:
    """Read this runner's environment from stdin and make it the process's; False (said on
    stderr) when the host sent none: it let go of the runner before it started."""
    try:
        environment = _read_environment()
    except (EOFError, OSError, ValueError, msgspec.DecodeError) as exc:
        print(
            f"isoplug runner: expected its environment on stdin from the host: {exc}",
            file=sys.stderr,
        )
        return False
    os.environ.clear()
    os.environ.update(environment.env)
    if environment.stamp:
        _stamp_environment_block(environment.stamp)
    # The time module read TZ when the zygote imported it; a spawned runner's reads its own.
    time.tzset()
    return True


def _read_environment() -> ForkedEnvironment:
    size = int.from_bytes(_read_exactly(_LENGTH_BYTES), "big")
    if size > MAX_FORKED_ENVIRONMENT_BYTES:
        raise ValueError(f"{size} bytes announced, more than {MAX_FORKED_ENVIRONMENT_BYTES}")
    return msgspec.msgpack.decode(_read_exactly(size), type=ForkedEnvironment)


def _read_exactly(size: int) -> bytearray:
    """``size`` bytes of stdin, not one more: the bootstrap line follows, for the runner's
    ``main`` to read."""
    buffer = bytearray(size)
    filled = 0
    with memoryview(buffer) as view:
        while filled < size:
            count = os.readv(0, [view[filled:]])
            if count == 0:
                raise EOFError(f"stdin ended after {filled} of {size} bytes")
            filled += count
    return buffer


def _stamp_environment_block(stamp: str) -> None:
    """Overwrite a variable in the environment block this process was started with.

    ``/proc/<pid>/environ`` shows that block, not ``os.environ``: a forked process shows its
    zygote's. The host finds a runner's descendants by a variable there (its tag), even ones
    that forked without ``exec`` and left its session: so the zygote starts with a placeholder
    of the tag's length, which each child overwrites with its own tag, in its own copy of the
    block (the stack's top, writable memory). A process it forks copies it too.
    """
    name, _, value = stamp.encode().partition(b"=")
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    # Fields 50 and 51 of stat(5): where the block starts and ends.
    start, end = int(fields[47]), int(fields[48])
    block = ctypes.string_at(start, end - start)
    if block.startswith(name + b"="):
        offset = len(name) + 1
    else:
        found = block.find(b"\0" + name + b"=")
        offset = found + len(name) + 2 if found >= 0 else -1
    length = block.find(b"\0", offset) - offset if offset >= 0 else -1
    if length != len(value):
        # The runner runs all the same; only what its plugins fork may escape the search.
        print(
            f"isoplug runner: no {len(value)}-byte {name.decode()} placeholder in the "
            "zygote's environment; processes this runner forks are not tagged",
            file=sys.stderr,
        )
        return
    ctypes.memmove(start + offset, value, len(value))
