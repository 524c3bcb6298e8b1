"""Checking a plugin's own interpreter (``python`` in its manifest) before its runner starts.

A runner needs Python >= 3.11 that can import msgspec and the host's isoplug. Started with
anything else, the runner dies before it can say why (an old Python fails on isoplug's syntax,
a venv without msgspec on the import), and ``/bin/ls`` or ``/bin/true`` are not Python at all:
the plugin would only ever read "exited before reporting ready", crash after crash. So the
supervisor runs the interpreter once first, with the runner's environment, and a plugin whose
interpreter cannot run a runner fails at once, with a message naming the plugin, the
interpreter, its version and what it lacks.

The probe is written for any Python (2.7 included), so that it can tell the version of one
too old. A passing interpreter is remembered by its path, its file's modification time and
size (a rebuilt or replaced interpreter is checked again); a failing one is checked again at
the plugin's next start (after its environment was fixed, a restart is enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping, Sequence

from isoplug.host.stderr_tail import quote_lines
from isoplug.wire.sanitize import clean_text

__all__ = ["MIN_VERSION", "check_interpreter"]

#: The oldest Python a runner runs on (the project's requires-python).
MIN_VERSION = (3, 11)
#: What the probe may print and the reason may quote, at most.
_MAX_OUTPUT = 64 * 1024
_MAX_QUOTE = 600

# Python 2 and 3 alike: the version first, then each import's outcome, one line each.
_PROBE = """\
import sys
sys.stdout.write("isoplug-probe version %d.%d.%d\\n" % tuple(sys.version_info[:3]))
sys.stdout.flush()
if sys.path and sys.path[0] == "":
    del sys.path[0]  # -c's working directory: a runner has none on its sys.path
if sys.version_info[:2] >= MIN_VERSION:
    for name in ("msgspec", "isoplug.runner.session"):
        try:
            __import__(name)
        except BaseException as exc:
            sys.stdout.write("isoplug-probe missing %s %s: %s\\n" % (
                name, type(exc).__name__, str(exc).replace("\\n", " ")))
            break
    else:
        sys.stdout.write("isoplug-probe ok\\n")
""".replace("MIN_VERSION", repr(MIN_VERSION))

_VERSION_LINE = re.compile(r"isoplug-probe version (\d{1,4}\.\d{1,4}\.\d{1,4})")
_MISSING_PREFIX = "isoplug-probe missing "

#: (path, mtime_ns, size) of interpreters that passed.
_passed: set[tuple[str, int, int]] = set()


async def check_interpreter(
    python: str, plugin_ids: Sequence[str], env: Mapping[str, str], timeout: float
) -> str | None:
    """Why ``python`` cannot run the runner of ``plugin_ids`` (with environment ``env``), or
    None when it can. Waits at most ``timeout`` seconds for it."""
    try:
        info = os.stat(python)
    except OSError as exc:
        return _reason(plugin_ids, python, f"cannot be read: {exc}")
    key = (python, info.st_mtime_ns, info.st_size)
    if key in _passed:
        return None
    why = await _probe(python, env, timeout)
    if why is None:
        _passed.add(key)
        return None
    return _reason(plugin_ids, python, why)


async def _probe(python: str, env: Mapping[str, str], timeout: float) -> str | None:
    try:
        process = await asyncio.create_subprocess_exec(
            python,
            "-c",
            # The probe on stdin: a program that is not Python quotes only this line.
            "import sys; exec(sys.stdin.read())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot be started: {exc}"
    try:
        out, err = await asyncio.wait_for(process.communicate(_PROBE.encode()), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return f"did not answer within {timeout:g} s when run with -c"
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    lines = out[:_MAX_OUTPUT].decode("utf-8", "replace").splitlines()
    # Strictly digits: the version is quoted, and a program that is not Python prints anything.
    version = next((m[1] for x in lines if (m := _VERSION_LINE.fullmatch(x))), "")
    if not version:
        said = _quote(err) or _quote(out)
        return (
            f"is not a Python interpreter: run with -c, it exited with code "
            f"{process.returncode}" + (f" and said: {said}" if said else " and said nothing")
        )
    named = f"is Python {version}"
    numbers = tuple(int(part) for part in version.split(".")[:2])
    if numbers < MIN_VERSION:
        return f"{named}; a runner needs Python >= {'.'.join(map(str, MIN_VERSION))}"
    if "isoplug-probe ok" in lines:
        return None
    missing = next((x[len(_MISSING_PREFIX) :] for x in lines if x.startswith(_MISSING_PREFIX)), "")
    if missing:
        name, _, error = missing.partition(" ")
        hint = (
            f"; install isoplug's dependencies in it ({python} -m pip install msgspec)"
            if name == "msgspec"
            else ""
        )
        return f"{named} but cannot import {name} ({clean_text(error, _MAX_QUOTE)}){hint}"
    said = _quote(err)
    return f"{named} but the check ended with code {process.returncode}" + (
        f": {said}" if said else ""
    )


def _quote(data: bytes) -> str:
    return quote_lines(data[-_MAX_OUTPUT:].decode("utf-8", "replace").splitlines())


def _reason(plugin_ids: Sequence[str], python: str, why: str) -> str:
    names = ", ".join(repr(p) for p in plugin_ids)
    which = "plugin" if len(plugin_ids) == 1 else "plugins"
    return f"{which} {names}: its python {clean_text(python, _MAX_QUOTE)} {why}"
