"""Checking a plugin's new configuration in the host, before anything changes.

Two checks, in order:

- :func:`check_overrides`: what the host is given (``Host(plugin_config=...)``,
  ``host.set_config``) must be a table of tables with string keys
  (:class:`~isoplug.errors.ConfigInvalid`), whose values can be sent to a runner
  (:class:`~isoplug.errors.UnencodableValue`, as for ``host.call``'s arguments). At once, in
  the host.
- :func:`check_in_process`: the plugin's own schema, declared in its code, which stays out of
  the host's process. A ready runner checks a configuration itself (``runner.set_config``);
  for a plugin without one (starting, restarting, failed, stopped) the host imports the
  plugin in a short-lived process of its own (:mod:`isoplug.runner.config_check`), with the
  runner's interpreter and environment, and asks it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from isoplug.errors import ConfigInvalid, UnencodableValue
from isoplug.host.environment import runner_environment
from isoplug.host.helper_process import HelperProcess
from isoplug.host.launch import plugin_entry, runner_python
from isoplug.host.manifest import Manifest
from isoplug.host.ready_report import MAX_FAILURE_CHARS
from isoplug.host.stderr_tail import outside_words
from isoplug.wire.sanitize import clean_text
from isoplug.wire.values import locate_unencodable

__all__ = ["check_in_process", "check_overrides"]

_CHECKER_MODULE = "isoplug.runner.config_check"
#: isoplug.runner.config_check's exit codes.
_EXIT_VALID = 0
_EXIT_INVALID = 3
_EXIT_NOT_LOADED = 4
_MAX_ANSWER_BYTES = 64 * 1024
_encoder = msgspec.msgpack.Encoder()


def check_overrides(plugin_id: str, config: object) -> dict[str, Any]:
    """``config`` as a plain dict, if it is a table the host can send to ``plugin_id``'s
    runner. Raises :class:`ConfigInvalid` for something else than a table or a key that is
    not a string (a TOML table's keys are), :class:`UnencodableValue` for a value that
    cannot be sent (``object()``, an int past 64 bits), both naming the plugin and where."""
    if not isinstance(config, Mapping):
        raise ConfigInvalid(
            f"plugin {plugin_id!r}: its configuration must be a table (a mapping of names to "
            f"values), got {type(config).__name__} {_short(config)}"
        )
    _check_keys(plugin_id, config, "config", 0)
    try:
        _encoder.encode(config)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        where = locate_unencodable(config, "config") or str(exc)
        raise UnencodableValue(
            f"plugin {plugin_id!r}: its configuration cannot be sent to its runner: {where}"
        ) from None
    return dict(config)


def _check_keys(plugin_id: str, table: Mapping[Any, Any], path: str, depth: int) -> None:
    if depth > 100:
        raise ConfigInvalid(f"plugin {plugin_id!r}: {path} is nested more than 100 levels deep")
    for key, value in table.items():
        if not isinstance(key, str):
            raise ConfigInvalid(
                f"plugin {plugin_id!r}: {path} has a key that is not a string: "
                f"{type(key).__name__} {_short(key)}"
            )
        if isinstance(value, Mapping):
            _check_keys(plugin_id, value, f"{path}[{_short(key)}]", depth + 1)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    _check_keys(plugin_id, item, f"{path}[{_short(key)}][{index}]", depth + 1)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


async def check_in_process(
    manifest: Manifest, inherit_environment: Sequence[str] | bool, timeout: float
) -> str | None:
    """Check ``manifest.config`` against its plugin's schema in a process of its own.

    None: it fits. Raises :class:`ConfigInvalid` (the runner's words) when the schema refuses
    it. Returns why it could not be checked when the plugin cannot be imported, or did not
    answer within ``timeout`` seconds (then the process is killed): its next start checks it.
    """
    helper = await HelperProcess.start(
        [runner_python([manifest]), "-m", _CHECKER_MODULE],
        runner_environment([manifest], inherit_environment),
        msgspec.json.encode(plugin_entry(manifest)),
        stderr=False,
    )
    answer = bytearray()
    try:
        async with asyncio.timeout(timeout):
            reading = asyncio.ensure_future(_read_answer(helper.stdout, answer))
            try:
                # Its exit, then the answer's end: its exit ends what the plugin's import
                # started (a forked process holds the answer's pipe too).
                await helper.wait()
                await reading
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
    except TimeoutError:
        if helper.returncode is None:
            return (
                f"importing plugin {manifest.id!r} to check it did not finish within {timeout:g} s"
            )
        # It exited and answered; what came by now is its answer.
    finally:
        await helper.close()
    returncode = helper.returncode
    reason = clean_text(answer.decode("utf-8", "replace"), MAX_FAILURE_CHARS)
    if returncode == _EXIT_VALID:
        return None
    if returncode == _EXIT_INVALID:
        raise ConfigInvalid(reason)
    if returncode == _EXIT_NOT_LOADED:
        # Its words (the plugin's exception among them), set apart from the host's warning
        # around them, as a runner's stderr is (see outside_words).
        return f"it cannot be imported, the process checking it said: {outside_words(reason)}"
    return f"the process checking it exited with code {returncode}"


async def _read_answer(stdout: asyncio.StreamReader, answer: bytearray) -> None:
    """Reads ``stdout`` to its end, keeping its first ``_MAX_ANSWER_BYTES`` in ``answer``."""
    while chunk := await stdout.read(_MAX_ANSWER_BYTES):
        answer += chunk[: max(0, _MAX_ANSWER_BYTES - len(answer))]
