"""Log forwarding between processes: full-fidelity records, nothing lost silently.

- :class:`ForwardingHandler` — the sending side, a ``logging.Handler``.
- :func:`forward_logs` — install it in a child process in one call.
- :func:`forward_loguru` — loguru's messages into ``logging`` as records of their own
  (:func:`forward_logs` does it by default).
- :class:`LogReceiver` — the receiving side, replaying records into this process's logging.
- :class:`LogReplayer` — the replay pipeline one connection uses (the plugin host uses it too).
- :func:`set_process_logger_budget` — how many loggers all of them may add to this process.
"""

from isoplug.logs.forward import LEVEL_ENV, forward_logs
from isoplug.logs.handler import ForwardingHandler
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.loguru_bridge import forward_loguru
from isoplug.logs.metrics import DropReason, LogMetrics
from isoplug.logs.receiver import ADDRESS_ENV, NAME_ENV, TOKEN_ENV, LogReceiver
from isoplug.logs.replay import LogReplayer
from isoplug.logs.routing import set_process_logger_budget

__all__ = [
    "ADDRESS_ENV",
    "LEVEL_ENV",
    "NAME_ENV",
    "TOKEN_ENV",
    "DropReason",
    "ForwardingHandler",
    "LogMetrics",
    "LogReceiver",
    "LogReplayer",
    "ReplayLimits",
    "forward_logs",
    "forward_loguru",
    "set_process_logger_budget",
]
