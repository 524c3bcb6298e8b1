"""Descriptors 0, 1 and 2 in a process started with one of them closed (``isoplug run >&-``,
a daemon's ``2>&-``, an application that closed its stdin).

The kernel gives the next ``open()``, ``socket()`` or ``pipe()`` the lowest free number: with
fd 2 closed, the next socket the host makes becomes the process's standard error. Whatever
writes there then writes into that socket (the interpreter's last words, faulthandler, a C
library, a child that inherits it), uvloop aborts when it closes a handle it finds on 0-2
(``uv__close: Assertion 'fd > STDERR_FILENO'``), and a child started with its own 2 closed
puts its next descriptor there in turn.

So the host, when it starts, and the command line, before anything else, put ``/dev/null`` on
each of 0, 1 and 2 that is closed (:func:`fill_standard_descriptors`): every descriptor opened
afterwards, isoplug's, the event loop's, the application's, lands above 2. The other way,
moving isoplug's own descriptors above 2 as they are made, cannot reach those that the event
loop, the standard library and other libraries make. ``/dev/null`` keeps what a closed
descriptor meant to whoever closed it: what is written there goes nowhere, a read ends at once.
"""

from __future__ import annotations

import os
import subprocess

__all__ = ["child_stderr", "fill_standard_descriptors"]

#: The standard descriptors: stdin, stdout, stderr.
_STANDARD = 2


def fill_standard_descriptors() -> tuple[int, ...]:
    """Put ``/dev/null`` on each of descriptors 0, 1 and 2 that is closed, inheritable as a
    standard descriptor is; return those it filled.

    Opens ``/dev/null`` until the kernel gives a number above 2: each open takes the lowest
    free number, so only closed standard descriptors are filled, and a descriptor another
    thread opens meanwhile is never replaced (``dup2`` onto a number found closed could
    close what that thread just opened under it)."""
    filled: list[int] = []
    while True:
        descriptor = os.open(os.devnull, os.O_RDWR)
        if descriptor > _STANDARD:
            os.close(descriptor)
            return tuple(filled)
        os.set_inheritable(descriptor, True)
        filled.append(descriptor)


def child_stderr() -> int | None:
    """``stderr`` for a child process that says what goes wrong on its standard error: the
    host's own (None) when a child inherits it, else ``/dev/null``. A descriptor 2 that is
    close-on-exec (a file the application opened while 2 was closed: Python opens every file
    so) would leave the child's 2 closed, and its own next descriptor there."""
    try:
        inherited = os.get_inheritable(2)
    except OSError:
        inherited = False  # closed again since the host started
    return None if inherited else subprocess.DEVNULL
