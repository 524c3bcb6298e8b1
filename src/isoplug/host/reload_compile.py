"""Hot reload compiles a runner's changed Python files before it restarts the runner for them,
with the interpreter that will run them.

A file saved in the middle of an edit does not compile: restarted into it, the plugin would
fail, so its runner keeps the code it loaded (:attr:`ReloadPlan.uncompiled
<isoplug.host.reload_plan.ReloadPlan.uncompiled>`). Whether a file compiles is the runner's
interpreter's to say: ``f"{d["k"]}"`` is valid on Python 3.12, not on 3.11, and a plugin's
``[environment]`` may set ``PYTHONWARNINGS=error``, under which an invalid escape sequence is
a ``SyntaxError``. So:

- a runner on the host's interpreter: the host compiles the files itself (in a thread);
- a runner on an interpreter of its own (``python`` in its manifest): a helper process of
  that interpreter (:class:`~isoplug.host.helper_process.HelperProcess`), with the runner's
  environment, compiles them and says which one fails, where and why. It has
  ``ready_timeout`` to answer (a runner on it has as long to start); when it cannot be run,
  does not answer in time, or answers nothing it should, the runner restarts all the same: a
  check that failed must not hold back a fix (a broken interpreter fails the runner's start,
  which then says why).

Only compiled, never run. A file gone or unreadable meanwhile is skipped: the next change
says what happened to it. Runners that would check the same files the same way share one
check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from isoplug.host.environment import runner_environment
from isoplug.host.helper_process import HelperProcess
from isoplug.host.launch import runner_python
from isoplug.host.reload_paths import shown_path
from isoplug.host.reload_plan import ReloadPlan
from isoplug.host.stderr_tail import outside_words
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop
from isoplug.wire.sanitize import clean_text

__all__ = ["compile_problem", "hold_uncompiled"]

_log = guarded_logger("isoplug.host")

#: An error quoted in a reload record.
_MAX_REASON_CHARS = 1024
#: What the helper may print before its answer, at most.
_MAX_OUTPUT = 64 * 1024
#: Helpers that run at once: a change of shared code reaches every runner.
_AT_ONCE = 4

_ANSWER = "isoplug-compile "
# Any Python >= 3.11 (a runner's): the paths come as JSON on stdin, the first that does not
# compile is told as one JSON line, then the end of the answer.
_HELPER = """\
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]  # -c's working directory: nothing there may pose as json
import json
for index, path in enumerate(json.loads(sys.stdin.buffer.read())):
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError:
        continue
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        print(ANSWER + json.dumps([index, getattr(exc, "lineno", None),
                                   type(exc).__name__, str(getattr(exc, "msg", exc))]))
        break
print(ANSWER + "end", flush=True)
""".replace("ANSWER", repr(_ANSWER))


class _Failure(msgspec.Struct, array_like=True):
    """A helper's word on the file that does not compile: outside text, checked and
    sanitized before it is quoted."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    line: int | None
    kind: str
    message: str


async def hold_uncompiled(
    plan: ReloadPlan, inherit_environment: Sequence[str] | bool, timeout: float
) -> ReloadPlan:
    """``plan`` with each runner whose changed Python files do not all compile (see the
    module's docstring) moved from ``restart`` to ``uncompiled``."""
    if not plan.compile_first:
        return plan
    at_once = asyncio.Semaphore(_AT_ONCE)
    checks: dict[object, asyncio.Future[str | None]] = {}
    by_runner: dict[str, asyncio.Future[str | None]] = {}
    for runner_id, (runner, files) in plan.compile_first.items():
        own = any(m.python is not None for m in runner.manifests)
        python = runner_python(runner.manifests) if own else None
        env = runner_environment(runner.manifests, inherit_environment) if own else {}
        key = (python, frozenset(env.items()), files)
        if key not in checks:
            checks[key] = asyncio.ensure_future(
                _bounded(at_once, compile_problem(files, python, env, timeout))
            )
        by_runner[runner_id] = checks[key]
    # gather: a cancel (the host closing) ends every check, and the helpers with them.
    await asyncio.gather(*checks.values())
    uncompiled = dict(plan.uncompiled)
    for runner_id, check in by_runner.items():
        if (problem := check.result()) is not None:
            uncompiled[runner_id] = problem
    return dataclasses.replace(
        plan,
        restart=tuple(r for r in plan.restart if r not in uncompiled),
        uncompiled=uncompiled,
        compile_first={},
    )


async def _bounded(at_once: asyncio.Semaphore, check: Awaitable[str | None]) -> str | None:
    async with at_once:
        return await check


async def compile_problem(
    files: Sequence[Path], python: str | None, env: Mapping[str, str], timeout: float
) -> str | None:
    """Where and why the first of the Python ``files`` that does not compile fails, on the
    host's interpreter (``python`` None) or on ``python`` run with ``env`` (None: they all
    compile, are gone, or the check could not say)."""
    if python is None:
        return await off_loop(_host_compile_problem, files)
    return await _helper_compile_problem(files, python, env, timeout)


def _host_compile_problem(files: Sequence[Path]) -> str | None:
    for path in files:
        try:
            source = path.read_bytes()
        except OSError:
            continue  # removed, or replaced meanwhile: the next change says
        try:
            compile(source, str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            reason = clean_text(str(getattr(exc, "msg", exc)), _MAX_REASON_CHARS)
            return _problem(path, getattr(exc, "lineno", None), type(exc).__name__, reason)
    return None


async def _helper_compile_problem(
    files: Sequence[Path], python: str, env: Mapping[str, str], timeout: float
) -> str | None:
    shown = shown_path(python)
    question = json.dumps([str(path) for path in files]).encode()
    try:
        helper = await HelperProcess.start([python, "-c", _HELPER], env, question, stderr=False)
    except OSError as exc:
        _log.warning(
            "reload: cannot run %s to compile the changed files (%s); restarting anyway",
            shown,
            clean_text(str(exc), _MAX_REASON_CHARS),
        )
        return None
    try:
        async with asyncio.timeout(timeout):
            answer = await _read_answer(helper.stdout)
    except TimeoutError:
        _log.warning(
            "reload: %s did not compile the changed files within %g s; restarting anyway",
            shown,
            timeout,
        )
        return None
    finally:
        await helper.close()
    if answer is None:
        _log.warning(
            "reload: %s ended without saying whether the changed files compile; restarting anyway",
            shown,
        )
        return None
    if answer == "end":
        return None
    try:
        failure = msgspec.json.decode(answer, type=_Failure)
        path = files[failure.index]
        if not failure.kind.isidentifier():
            raise ValueError(failure.kind)
    except (msgspec.ValidationError, msgspec.DecodeError, IndexError, ValueError):
        _log.warning(
            "reload: %s answered the compile check with %s; restarting anyway",
            shown,
            outside_words(clean_text(answer, _MAX_REASON_CHARS)),
        )
        return None
    reason = clean_text(failure.message, _MAX_REASON_CHARS)
    return _problem(path, failure.line, clean_text(failure.kind, _MAX_REASON_CHARS), reason)


async def _read_answer(stdout: asyncio.StreamReader) -> str | None:
    """The helper's answer: what follows the first answer line's mark (None: it printed none
    before its output ended, or too much)."""
    read = 0
    while True:
        try:
            line = await stdout.readline()
        except ValueError:  # a line longer than the reader holds: not an answer
            return None
        if not line:
            return None
        read += len(line)
        if read > _MAX_OUTPUT:
            return None
        text = line.decode("utf-8", "replace").rstrip("\n")
        if text.startswith(_ANSWER):
            return text[len(_ANSWER) :]


def _problem(path: Path, line: int | None, kind: str, reason: str) -> str:
    where = f"{shown_path(path)}, line {line}" if line else shown_path(path)
    return f"{where}: {kind}: {reason}"
