"""The zygote's protocol: messages on a SOCK_SEQPACKET socket pair between the host and its
zygote (one message per packet), msgpack-encoded as a :data:`ZygoteMessage`; descriptors
travel beside them (SCM_RIGHTS). And what the host writes on a forked runner's stdin ahead of
its bootstrap (:class:`ForkedEnvironment`). See :mod:`isoplug.host.zygote` and
:mod:`isoplug.runner.zygote`.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "MAX_FORKED_ENVIRONMENT_BYTES",
    "ChildExited",
    "ForkOrder",
    "ForkRefused",
    "Forked",
    "ForkedEnvironment",
    "ZygoteMessage",
]


class ForkOrder(msgspec.Struct, frozen=True, tag="fork"):
    """Host -> zygote: fork a runner. Four descriptors come with it: the runner's stdin, its
    stdout and stderr, and one for each number in ``inherit``. It holds only what every runner
    of the host shares: nothing of one runner's own passes the zygote (its environment and
    tokens follow on its stdin: see :class:`ForkedEnvironment`), so no runner forked later
    finds them in the memory it copies from the zygote."""

    #: The working directory a spawned runner would inherit: the host's, now.
    cwd: str
    #: The umask a spawned runner would inherit: the host's, now.
    umask: int
    #: The resource limits a spawned runner would inherit, the host's now: ``(resource,
    #: soft, hard)`` for each ``resource.RLIMIT_*``.
    rlimits: tuple[tuple[int, int, int], ...]
    #: The descriptor numbers the runner inherits besides 0, 1 and 2, as ``pass_fds`` (the
    #: bootstrap names them: its health socket); their descriptors follow the first three.
    inherit: tuple[int, ...] = ()


#: The most a forked runner's :class:`ForkedEnvironment` may take (a larger one is spawned).
MAX_FORKED_ENVIRONMENT_BYTES = 128 * 1024


class ForkedEnvironment(msgspec.Struct, frozen=True):
    """Host -> a runner the zygote forked, on its stdin ahead of the bootstrap line: what a
    spawned runner's ``exec`` gives it. Msgpack, after its length (4 bytes, big-endian)."""

    #: The runner's whole environment (the host's, the manifests', isoplug's).
    env: dict[str, str]
    #: ``NAME=value``: overwrites, in place, the variable ``NAME`` of the environment the
    #: zygote was started with (a placeholder of the same length), so that ``/proc/<pid>/
    #: environ`` of the runner and of the processes it forks shows it (see
    #: isoplug.host.descendants: the runner's tag).
    stamp: str = ""


class Forked(msgspec.Struct, frozen=True, tag="forked"):
    """Zygote -> host, answering a :class:`ForkOrder` in order: the runner's pid (a pidfd of
    it comes with it where the kernel has them)."""

    pid: int


class ForkRefused(msgspec.Struct, frozen=True, tag="refused"):
    """Zygote -> host, answering a :class:`ForkOrder` in order: it could not fork, and why."""

    error: str


class ChildExited(msgspec.Struct, frozen=True, tag="exited"):
    """Zygote -> host: a runner it forked has exited and was reaped; ``returncode`` as
    ``Popen.returncode`` (the exit code, or minus the signal number)."""

    pid: int
    returncode: int
    #: Its CPU time (user + system, seconds), from ``wait4``.
    cpu: float | None = None


ZygoteMessage = ForkOrder | Forked | ForkRefused | ChildExited
