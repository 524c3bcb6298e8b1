"""isoplug's own loggers (``isoplug``, ``isoplug.host``, ...) stay enabled.

``logging.config``'s ``dictConfig()`` and ``fileConfig()`` disable every existing logger their
configuration does not name, unless given ``disable_existing_loggers=False``. The usual layout,
``import isoplug`` at the top of a module and ``dictConfig()`` in ``main()``, disables the
loggers isoplug created at import: the host's own reports (a crash, a plugin failed for good, a
runner killed as hung) then reach no handler and vanish unseen. A blanket disable is hardly
ever aimed at them; the host enables them again and says so, as it does for the ``plugin.*``
loggers of its records (:meth:`isoplug.logs.replay_reports.ReplayReports.enable_again`).
"""

from __future__ import annotations

import logging

from isoplug.log_guard import guarded_logger

__all__ = ["keep_own_loggers_enabled"]

_PREFIX = "isoplug"


def keep_own_loggers_enabled() -> None:
    """Enable isoplug's loggers that a logging configuration disabled, saying so once each
    time on ``isoplug.host``."""
    # Called at every change of a plugin's state: a look at the host's own logger first (a
    # configuration that disables loggers disables it too), the registry (which the
    # plugins' records fill, up to 100,000 entries) only then.
    host_logger = logging.Logger.manager.loggerDict.get(f"{_PREFIX}.host")
    if not (isinstance(host_logger, logging.Logger) and host_logger.disabled):
        return
    disabled = sorted(
        name
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if (name == _PREFIX or name.startswith(f"{_PREFIX}."))
        and isinstance(logger, logging.Logger)
        and logger.disabled
    )
    if not disabled:
        return
    for name in disabled:
        logging.getLogger(name).disabled = False
    shown = ", ".join(disabled[:5]) + (f" and {len(disabled) - 5} more" if disabled[5:] else "")
    guarded_logger("isoplug.host").warning(
        "isoplug's logger(s) %s had been disabled, so the host's own reports (crashes, failed "
        "plugins) reached no handler; isoplug enabled them again. logging.config's dictConfig() "
        "and fileConfig() disable every existing logger their configuration does not name, "
        "unless given disable_existing_loggers=False (or name the 'isoplug' logger). To quiet "
        "the host, set a level: logging.getLogger('isoplug').setLevel(logging.WARNING)",
        shown,
    )
