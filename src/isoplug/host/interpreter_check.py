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
import os
import re
import shlex
from collections.abc import Mapping, Sequence

from isoplug.host.commands import Commands
from isoplug.host.config import SupervisorConfig
from isoplug.host.environment import runner_environment
from isoplug.host.helper_process import HelperProcess
from isoplug.host.launch import runner_python
from isoplug.host.manifest import Manifest
from isoplug.host.stderr_tail import outside_words, quote_lines
from isoplug.wire.sanitize import clean_text

__all__ = [
    "MIN_VERSION",
    "UNRUNNABLE",
    "check_interpreter",
    "interpreter_problem",
    "problem_after_import_failure",
]

#: Why restarting cannot help a plugin whose interpreter failed the check.
UNRUNNABLE = "its interpreter cannot run a runner (checked again at its next start)"

#: A runner's last words that tell an interpreter unable to import what the probe imports.
_IMPORT_FAILED = re.compile(r"\b(?:ModuleNotFoundError|ImportError)\b[^|]*\b(?:msgspec|isoplug)\b")

#: The oldest Python a runner runs on (the project's requires-python).
MIN_VERSION = (3, 11)
#: What the probe may print and the reason may quote, at most.
_MAX_OUTPUT = 64 * 1024
_MAX_QUOTE = 600

#: The modules the probe imports: the only names its "missing" line may show unquoted.
_PROBED = ("msgspec", "isoplug.runner.session")

# Python 2 and 3 alike: the version first, then each import's outcome, one line each.
_PROBE = """\
import sys
sys.stdout.write("isoplug-probe version %d.%d.%d\\n" % tuple(sys.version_info[:3]))
sys.stdout.flush()
if sys.path and sys.path[0] == "":
    del sys.path[0]  # -c's working directory: a runner has none on its sys.path
if sys.version_info[:2] >= MIN_VERSION:
    for name in PROBED:
        try:
            __import__(name)
        except BaseException as exc:
            sys.stdout.write("isoplug-probe missing %s %s: %s\\n" % (
                name, type(exc).__name__, str(exc).replace("\\n", " ")))
            break
    else:
        sys.stdout.write("isoplug-probe ok\\n")
""".replace("MIN_VERSION", repr(MIN_VERSION)).replace("PROBED", repr(_PROBED))

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
        helper = await HelperProcess.start(
            # The probe on stdin: a program that is not Python quotes only this line.
            [python, "-c", "import sys; exec(sys.stdin.read())"],
            env,
            _PROBE.encode(),
            stderr=True,
        )
    except OSError as exc:
        return f"cannot be started: {exc}"
    out = bytearray()
    err = bytearray()
    try:
        async with asyncio.timeout(timeout):
            assert helper.stderr is not None
            said = asyncio.ensure_future(_keep_tail(helper.stderr, err))
            try:
                # The answer line is the answer: a process the interpreter started (a
                # wrapper's background helper) may keep stdout open long after it.
                if not await _read_answer(helper.stdout, out):
                    # No answer: how it ended, and what it said, tell why. Its exit ends what
                    # it started, so its stderr ends too.
                    await helper.wait()
                    await said
            finally:
                said.cancel()
                await asyncio.gather(said, return_exceptions=True)
    except TimeoutError:
        if helper.returncode is None:
            # "that could be found": a process it started that left its session, dropped the
            # tag and lost its link to it before the record saw it is beyond reach.
            return (
                f"did not answer within {timeout:g} s when run with -c; it was stopped, with "
                "the processes it started that could be found"
            )
        # It exited, but something it started outside its group kept its output open: what
        # came by now is all there is.
    finally:
        await helper.close()
    return _judge(python, bytes(out), bytes(err), helper.returncode)


async def _read_answer(stdout: asyncio.StreamReader, out: bytearray) -> bool:
    """Reads the probe's output into ``out`` (its first bytes, at most ``_MAX_OUTPUT``) until a
    line decides the check (True) or the output ends (False)."""
    while chunk := await stdout.read(_MAX_OUTPUT):
        out += chunk[: max(0, _MAX_OUTPUT - len(out))]
        complete = out[: out.rfind(b"\n") + 1]
        if _decided(_lines(complete)):
            return True
    return False


async def _keep_tail(reader: asyncio.StreamReader, tail: bytearray) -> None:
    """Reads ``reader`` to its end, keeping its last ``_MAX_OUTPUT`` bytes in ``tail``."""
    while chunk := await reader.read(_MAX_OUTPUT):
        tail += chunk
        del tail[:-_MAX_OUTPUT]


async def interpreter_problem(
    entries: Sequence[Manifest], config: SupervisorConfig, commands: Commands
) -> str | None:
    """Why the interpreter that ``entries`` name cannot run their runner (see
    :func:`check_interpreter`); None when it can, or when they name none (the host's own runs
    the host). A stop or restart command (``commands``) cuts the check short."""
    if all(m.python is None for m in entries):
        return None
    check = asyncio.ensure_future(
        check_interpreter(
            runner_python(entries),
            [m.id for m in entries],
            runner_environment(entries, config.inherit_environment),
            config.ready_timeout,
        )
    )
    try:
        await commands.wait_with((check,), None)
    finally:
        if not check.done():
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
    # Cut short by a command: the caller accounts for the runner it did not start.
    return None if check.cancelled() else check.result()


async def problem_after_import_failure(
    entries: Sequence[Manifest], config: SupervisorConfig, commands: Commands, said: str
) -> str | None:
    """:func:`interpreter_problem`, asked again although the interpreter passed before, when
    its runner exited before it connected saying (``said``) it could not import msgspec or
    isoplug: its packages changed since (``pip uninstall msgspec`` in its venv), which the
    file's own version does not tell. None when ``said`` says no such thing."""
    if all(m.python is None for m in entries) or not _IMPORT_FAILED.search(said):
        return None
    python = runner_python(entries)
    for passed in [key for key in _passed if key[0] == python]:
        _passed.discard(passed)
    return await interpreter_problem(entries, config, commands)


def _lines(out: bytes | bytearray) -> list[str]:
    return bytes(out).decode("utf-8", "replace").splitlines()


def _version(lines: Sequence[str]) -> str:
    # Strictly digits: the version is quoted, and a program that is not Python prints anything.
    return next((m[1] for x in lines if (m := _VERSION_LINE.fullmatch(x))), "")


def _too_old(version: str) -> bool:
    return tuple(int(part) for part in version.split(".")[:2]) < MIN_VERSION


def _decided(lines: Sequence[str]) -> bool:
    """Whether the probe's complete lines so far say all the check needs."""
    version = _version(lines)
    return bool(version) and (
        _too_old(version)
        or "isoplug-probe ok" in lines
        or any(x.startswith(_MISSING_PREFIX) for x in lines)
    )


def _judge(python: str, out: bytes, err: bytes, returncode: int | None) -> str | None:
    """Why the probe's output says the interpreter cannot run a runner; None when it can."""
    lines = _lines(out)
    version = _version(lines)
    if not version:
        said = _quote(err) or _quote(out)
        return f"is not a Python interpreter: run with -c, it exited with code {returncode}" + (
            f" and said: {outside_words(said)}" if said else " and said nothing"
        )
    named = f"is Python {version}"
    if _too_old(version):
        return f"{named}; a runner needs Python >= {'.'.join(map(str, MIN_VERSION))}"
    if "isoplug-probe ok" in lines:
        return None
    missing = next((x[len(_MISSING_PREFIX) :] for x in lines if x.startswith(_MISSING_PREFIX)), "")
    if missing:
        name, _, error = missing.partition(" ")
        hint = _install_hint(python, name, error)
        # Both are the interpreter's words (a program posing as Python prints any line):
        # only a name the probe asks for is shown bare, the rest stays inside a quote.
        shown = name if name in _PROBED else outside_words(clean_text(name, _MAX_QUOTE))
        error = outside_words(clean_text(error, _MAX_QUOTE))
        return f"{named} but cannot import {shown}, saying: {error}{hint}"
    said = _quote(err)
    return f"{named} but the check ended with code {returncode}" + (
        f" and said: {outside_words(said)}" if said else ""
    )


#: What isoplug's codec raises on import under a msgspec too old for it (isoplug.wire.codec).
_OLD_MSGSPEC = "isoplug needs msgspec >= 0.19.0, but msgspec "


def _install_hint(python: str, name: str, error: str) -> str:
    """The command that fixes a missing or outdated msgspec, naming the plugin's interpreter
    (quoted for a shell, a path with spaces included): a bare ``pip`` in the operator's shell
    would install into the host's environment instead."""
    command = f"{clean_text(shlex.quote(python), _MAX_QUOTE)} -m pip install"
    if name == "msgspec":
        return f"; install isoplug's dependencies in it ({command} msgspec)"
    if _OLD_MSGSPEC in error:
        return f"; upgrade msgspec in it ({command} -U 'msgspec>=0.19')"
    return ""


def _quote(data: bytes) -> str:
    return quote_lines(data[-_MAX_OUTPUT:].decode("utf-8", "replace").splitlines())


def _reason(plugin_ids: Sequence[str], python: str, why: str) -> str:
    names = ", ".join(repr(p) for p in plugin_ids)
    which = "plugin" if len(plugin_ids) == 1 else "plugins"
    return f"{which} {names}: its python {clean_text(python, _MAX_QUOTE)} {why}"
