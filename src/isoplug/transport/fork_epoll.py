"""A forked child's own epoll instance, in place of the one it shares with its parent.

An epoll instance is shared by a fork: the registrations belong to the instance, not to the
process. A child whose copy of an event loop unregisters a descriptor (its ``loop.close()``
removes its self-pipe; a transport it closes removes its socket) takes that registration from
the parent's loop too: the parent's loop then never wakes for ``call_soon_threadsafe`` (its
threads' results, ``asyncio.to_thread``), or never hears from that socket again.

:func:`epoll_of_its_own` gives an asyncio selector loop (epoll) in the child an instance of
its own under the same descriptor number, with the same registrations: the child's loop goes on
working, and nothing it registers or unregisters reaches the parent's. :func:`empty_epolls`
replaces given epoll instances with empty ones, for loops whose registrations cannot be read
(uvloop's): the child's copy of such a loop must not run again.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
from collections.abc import Iterable

__all__ = ["EPOLL_LINK", "empty_epolls", "epoll_of_its_own", "open_epolls"]

#: What ``/proc/self/fd/<n>`` links to for an epoll instance.
EPOLL_LINK = "anon_inode:[eventpoll]"


def epoll_of_its_own(loop: asyncio.AbstractEventLoop) -> bool:
    """In a forked child: give ``loop`` (an asyncio selector loop on epoll) an epoll instance
    of its own with the same registrations; False (nothing done) for another kind of loop."""
    selector = getattr(loop, "_selector", None)
    if not isinstance(selector, selectors.EpollSelector) or loop.is_closed():
        return False
    fresh = select.epoll()
    try:
        for key in selector.get_map().values():
            events = (select.EPOLLIN if key.events & selectors.EVENT_READ else 0) | (
                select.EPOLLOUT if key.events & selectors.EVENT_WRITE else 0
            )
            try:
                fresh.register(key.fd, events)
            except OSError:
                continue  # a descriptor closed behind the loop's back: it fails there too
        # Not inherited by programs the child runs, as the instance it replaces (CLOEXEC).
        os.dup2(fresh.fileno(), selector.fileno(), inheritable=False)
    finally:
        fresh.close()
    return True


def open_epolls() -> list[int]:
    """The descriptors of this process's epoll instances (none where /proc cannot tell)."""
    found: list[int] = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == EPOLL_LINK:
                found.append(int(name))
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
    return found


def empty_epolls(fds: Iterable[int]) -> None:
    """Replace each epoll instance ``fds`` names by a new empty one, under the same number."""
    for fd in fds:
        fresh = select.epoll()
        try:
            os.dup2(fresh.fileno(), fd, inheritable=False)
        except OSError:
            continue  # closed meanwhile
        finally:
            fresh.close()
