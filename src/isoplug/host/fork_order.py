"""What the host hands a runner its zygote forks, and when only a spawn gives it what a spawned
runner would have.

A spawned runner gets from its ``exec`` the host's working directory, umask and resource
limits as they are at that moment, its own environment, and an interpreter set up from that
environment. A forked one is a copy of the zygote, whose interpreter was set up once, when the
host's first runner started. So:

- :func:`fork_order`: what every runner of the host shares, now (working directory, umask,
  resource limits), which the zygote sets in the child;
- :func:`environment_preamble`: the runner's own environment, which the host writes on the
  runner's stdin ahead of its bootstrap line. It never passes through the zygote: whatever the
  zygote's memory held, every runner forked after it would copy (docs/security.md);
- :func:`startup_differences`: the variables a process reads only at its start (the
  interpreter, the dynamic loader, the C library, the OpenSSL the zygote loaded) where the
  runner's differ from the zygote's; such a runner is spawned.
"""

from __future__ import annotations

import fnmatch
import os
import resource
from collections.abc import Mapping, Sequence

import msgspec

from isoplug.control.zygote import MAX_FORKED_ENVIRONMENT_BYTES, ForkedEnvironment, ForkOrder
from isoplug.host.descendants import TAG_LENGTH, TAG_VARIABLE

__all__ = [
    "STARTUP_VARIABLES",
    "environment_preamble",
    "fork_order",
    "startup_differences",
]

#: What a process reads only at its start (patterns as in :mod:`fnmatch`); a fork keeps the
#: zygote's:
#:
#: - ``PYTHON*``: the interpreter's ``sys.path``, ``sys.flags``, hash seed, warning filters...
#: - the locale, from which the interpreter fixes its encodings (UTF-8 mode, the file system's
#:   and the standard streams'), and, in the C locale, coerces every category (PEP 538);
#:   ``LOCPATH``: where the C library loaded that locale's data from;
#: - ``LD_*``: the dynamic loader's (``LD_LIBRARY_PATH`` and ``LD_PRELOAD`` among them: a
#:   ``dlopen`` later searches the folders it read at ``exec``); ``GLIBC_TUNABLES`` and
#:   ``MALLOC_*`` (``MALLOC_ARENA_MAX``...): the C library's, read at ``exec`` as tunables;
#:   ``GCONV_PATH``: its character set converters' configuration, read once per process;
#: - ``OPENSSL_*``: OpenSSL's (``OPENSSL_CONF``, ``OPENSSL_MODULES``, ``OPENSSL_ia32cap``),
#:   read when ``libcrypto`` is loaded and initialized, which the zygote's ``import ssl`` did.
#:
#: Not what a library reads when the plugin imports it (``OPENBLAS_NUM_THREADS``...): a forked
#: runner imports it after the fork, from its own environment.
STARTUP_VARIABLES = (
    "PYTHON*",
    "LANG",
    "LC_*",
    "LOCPATH",
    "LD_*",
    "GLIBC_TUNABLES",
    "MALLOC_*",
    "GCONV_PATH",
    "OPENSSL_*",
)

#: Every resource limit this platform has.
_RESOURCES = tuple(
    sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")})
)
_encode = msgspec.msgpack.Encoder().encode


def startup_differences(runner: Mapping[str, str], zygote: Mapping[str, str]) -> list[str]:
    """The :data:`STARTUP_VARIABLES` whose value in a runner's environment differs from the
    one the zygote was started with (set in one only, or to another value)."""
    names = {
        name
        for name in (*runner, *zygote)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in STARTUP_VARIABLES)
    }
    return sorted(name for name in names if runner.get(name) != zygote.get(name))


def fork_order(inherit: Sequence[int]) -> ForkOrder:
    """The order for a runner that inherits the descriptor numbers ``inherit``, with what a
    spawned runner would inherit of the host now. Raises :class:`OSError` when the host's
    umask cannot be read."""
    return ForkOrder(
        cwd=os.getcwd(),
        umask=_umask(),
        rlimits=tuple((number, *resource.getrlimit(number)) for number in _RESOURCES),
        inherit=tuple(inherit),
    )


def environment_preamble(env: Mapping[str, str]) -> bytes | None:
    """What a forked runner with the environment ``env`` reads on its stdin before its
    bootstrap line (see :class:`~isoplug.control.zygote.ForkedEnvironment`); None when it is too
    large (then the runner is spawned)."""
    tag = env.get(TAG_VARIABLE, "")
    body = _encode(
        ForkedEnvironment(
            env=dict(env),
            stamp=f"{TAG_VARIABLE}={tag}" if len(tag) == TAG_LENGTH else "",
        )
    )
    if len(body) > MAX_FORKED_ENVIRONMENT_BYTES:
        return None
    return len(body).to_bytes(4, "big") + body


def _umask() -> int:
    # Read, never set: os.umask() sets one to read it, and a file another thread of the
    # application created meanwhile would get that one.
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise OSError("/proc/self/status tells no umask (Linux 4.7 and later do)")
