"""``python -m isoplug.runner.config_check``: check a configuration against a plugin's schema.

The host runs this when it must check a new configuration of a plugin that has no ready
runner to ask (starting, restarting, failed, stopped): the schema is the plugin's code, which
stays out of the host's process. Like a runner, it imports the plugin (no ``setup``) and
validates exactly as the runner would (:func:`isoplug.runner.config.validate_config`).

Reads one :class:`~isoplug.control.PluginEntry` (JSON, its ``config`` the whole configuration)
on stdin and exits with :data:`EXIT_VALID`, :data:`EXIT_INVALID` or :data:`EXIT_NOT_LOADED`;
the reason of the last two is what it writes on its stdout. What the plugin prints while it
is imported goes to stderr (file descriptor 1 itself is pointed there), so it cannot pass for
the answer. It exits at once when done: threads or exit hooks the plugin's import left behind
do not hold it.
"""

from __future__ import annotations

import os
import sys

import msgspec

from isoplug.control import PluginEntry
from isoplug.errors import ConfigInvalid
from isoplug.runner.config import validate_config
from isoplug.runner.loader import PluginLoadError, drop_working_directory, load_plugin_class

__all__ = ["EXIT_INVALID", "EXIT_NOT_LOADED", "EXIT_VALID", "main"]

EXIT_VALID = 0
#: The plugin's schema refuses the configuration.
EXIT_INVALID = 3
#: The plugin could not be imported: its schema is unknown.
EXIT_NOT_LOADED = 4


def main() -> int:
    entry = msgspec.json.decode(sys.stdin.buffer.read(), type=PluginEntry)
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="backslashreplace")
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        plugin_class = load_plugin_class(entry)
        validate_config(entry.id, plugin_class, entry.config)
    except PluginLoadError as exc:
        code, reason = EXIT_NOT_LOADED, str(exc)
    except ConfigInvalid as exc:
        code, reason = EXIT_INVALID, str(exc)
    else:
        code, reason = EXIT_VALID, ""
    answer.write(reason)
    answer.close()
    return code


if __name__ == "__main__":
    drop_working_directory()
    exit_code = main()
    sys.stderr.flush()
    os._exit(exit_code)
