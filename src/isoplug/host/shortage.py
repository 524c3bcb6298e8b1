"""The host out of a resource of the system's (file descriptors, threads, memory): said as
such, with the limit and what to change, never as a bug in isoplug; a runner that could not be
started for it is restarted with backoff, as after a crash, since the shortage may pass.
"""

from __future__ import annotations

import errno
import resource

from isoplug.thread_limits import ThreadShortage, cannot_start_thread, thread_limits

__all__ = ["DESCRIPTORS_PER_RUNNER", "shortage"]

#: About how many of the host's descriptors a running plugin takes (its connections, pipes,
#: pidfd, health link, log connections): measured 14-15.
DESCRIPTORS_PER_RUNNER = 15
#: About how many descriptors ``isoplug run`` holds before its first runner (its event loop,
#: listeners, zygote, console): with 24 no runner started, with 40 one of two.
DESCRIPTORS_OF_ITS_OWN = 25


def shortage(error: BaseException) -> str | None:
    """What the host ran out of, when ``error`` says it did (None: some other failure)."""
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        whose = "the system" if error.errno == errno.ENFILE else f"the host (ulimit -n {soft})"
        return (
            f"{whose} is out of file descriptors ({error.strerror}): each running plugin takes "
            f"about {DESCRIPTORS_PER_RUNNER} of the host's, and the host about "
            f"{DESCRIPTORS_OF_ITS_OWN} of its own; raise the limit (ulimit -n, or LimitNOFILE= "
            "in a systemd unit)"
        )
    if isinstance(error, OSError) and error.errno in (errno.ENOMEM, errno.EAGAIN):
        return f"the host could not get memory or a process ({error.strerror})"
    if isinstance(error, ThreadShortage):
        return f"the host {error}"
    if cannot_start_thread(error):
        return f"the host could not start another thread; {thread_limits()}"
    return None
