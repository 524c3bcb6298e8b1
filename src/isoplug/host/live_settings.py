"""Settings handed to a running runner over its control connection: log levels (after each
start, and when changed) and a plugin's new configuration (taken live by its ``on_config``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from isoplug.control import SET_CONFIG, SET_LOG_LEVEL, ConfigChange, LogLevelChange
from isoplug.errors import ConfigInvalid, IsoplugError, RemoteError, RequestTimeout, TransportError
from isoplug.host.levels import LogLevels
from isoplug.host.ready_report import MAX_FAILURE_CHARS, traceback_block
from isoplug.log_guard import guarded_logger
from isoplug.rpc import Peer
from isoplug.wire.sanitize import clean_text

__all__ = ["apply_log_levels", "offer_config"]

_log = guarded_logger("isoplug.host")

_CONFIG_INVALID = f"{ConfigInvalid.__module__}.{ConfigInvalid.__qualname__}"


async def apply_log_levels(runner_id: str, levels: LogLevels, peer: Peer) -> None:
    """Set every level of ``levels`` in a runner becoming ready; one that fails is logged, the
    others are set. Until the runner is said READY, ``set_log_level()`` only records a level
    (it sends to ready runners): one set while these are sent is missed by this pass, so they
    are all sent again until a pass saw no level set meanwhile. The caller says READY with no
    await after this returns, so each level set from then on is sent by set_log_level()."""
    while True:
        version = levels.version
        # A copy: set_log_level() may add a logger while a request is awaited.
        if not await _send_levels(runner_id, levels.changes(), peer) or levels.version == version:
            return


async def _send_levels(runner_id: str, changes: Iterable[LogLevelChange], peer: Peer) -> bool:
    """Set each of ``changes`` in the runner; False once it ended (the next one gets them)."""
    for change in changes:
        if not peer.is_open:
            return False
        try:
            await peer.request(SET_LOG_LEVEL, change)
        except TransportError as exc:
            # It ended meanwhile (a stop, a restart, a crash): the next runner gets them all.
            _log.debug(
                "runner %s ended as its levels were set: %s",
                runner_id,
                clean_text(str(exc), MAX_FAILURE_CHARS),
            )
            return False
        except IsoplugError as exc:
            _log.warning(
                "runner %s: could not set the level of %s: %s",
                runner_id,
                f"plugin {change.plugin!r}" if change.plugin else f"logger {change.logger!r}",
                clean_text(str(exc), MAX_FAILURE_CHARS),
            )
    return True


async def offer_config(
    peer: Peer, plugin_id: str, config: Mapping[str, Any], timeout: float | None
) -> bool:
    """Offer ``plugin_id`` its new ``config`` in its ready runner: True when it took it live
    (its ``on_config``), False when its runner must restart with it (no ``on_config``, or
    ``on_config`` failed, gave no answer within ``timeout`` seconds, or ended its runner: the
    plugin may be half-changed, and the schema checks the configuration before ``on_config``
    sees it). Raises :class:`~isoplug.errors.ConfigInvalid` when its schema refuses it."""
    try:
        live = await peer.request(
            SET_CONFIG, ConfigChange(plugin_id, dict(config)), timeout=timeout
        )
    except RemoteError as exc:
        if exc.remote_type == _CONFIG_INVALID:
            raise ConfigInvalid(clean_text(exc.remote_message, MAX_FAILURE_CHARS)) from None
        # The message on one line, the plugin's traceback after it (as a failed setup's).
        _log.warning(
            "plugin %s: on_config failed: %s: %s; restarting its runner with the new "
            "configuration%s",
            plugin_id,
            clean_text(exc.remote_type.removeprefix("builtins."), MAX_FAILURE_CHARS),
            clean_text(exc.remote_message, MAX_FAILURE_CHARS),
            traceback_block(exc.remote_traceback),
        )
        return False
    except RequestTimeout:
        # A hung on_config must not hold the change (nor hot reload) for ever: the restart
        # ends it, and the new start takes the configuration (or its setup says why not).
        _log.warning(
            "plugin %s: on_config gave no answer within %s s; restarting its runner with the "
            "new configuration",
            plugin_id,
            timeout,
        )
        return False
    except TransportError as exc:
        # The runner ended while on_config ran (os._exit, a crash, a memory limit): what it
        # was handed is the configuration the plugin is to run with from now on.
        _log.warning(
            "plugin %s: its runner ended during on_config (%s); restarting it with the new "
            "configuration",
            plugin_id,
            clean_text(type(exc).__name__, MAX_FAILURE_CHARS),
        )
        return False
    return live is True
