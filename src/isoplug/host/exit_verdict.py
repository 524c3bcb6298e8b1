"""Whether restarting a runner that exited can help: the exits that every start would repeat
(its runner could not read its bootstrap, none of its plugins could be loaded, its python runs
the runner as a child), told apart from crashes by what the plugin cannot produce.
"""

from __future__ import annotations

from isoplug.control import EXIT_BAD_BOOTSTRAP, EXIT_NOTHING_LOADED, ReadyReport
from isoplug.host.stderr_tail import outside_words

__all__ = ["BEFORE_READY", "explained_exit", "lasting_cause"]

#: Why a runner's life ended, when it exited before its ready report.
BEFORE_READY = "it exited before reporting ready"

#: The start of what isoplug's runner prints when it cannot read its bootstrap.
_BAD_BOOTSTRAP_SAID = "isoplug runner: expected a bootstrap line"


def lasting_cause(
    returncode: int,
    permanent: str | None,
    *,
    connected: bool,
    said: str,
    report: ReadyReport | None,
    wrapped: bool,
) -> str | None:
    """Why restarting cannot help a runner that exited with ``returncode`` (``permanent``,
    if its life found a reason already); None for a crash. ``connected``: whether it
    connected with its tokens (control or logs); ``said``: the last words it wrote on stderr
    before it was ready; ``report``: its ready report, if any; ``wrapped``: the host refused
    its control connection, and a plugin names a python of its own."""
    if returncode == EXIT_BAD_BOOTSTRAP and not connected and said.startswith(_BAD_BOOTSTRAP_SAID):
        # Decided by what the plugin cannot produce: plugin code runs only after the
        # runner read its bootstrap and connected with its tokens (control or logs), so a
        # runner that did either got past its bootstrap, whatever its stderr says (a
        # plugin's own exit 2 and words are a crash of the plugin's). Only the code of a
        # plugin's own interpreter at startup (sitecustomize) could still imitate this
        # (docs/operations.md says so where it describes this verdict).
        return (
            "the runner exited before connecting, saying it could not read its bootstrap "
            "(an isoplug bug, if its python runs isoplug's runner)"
        )
    if permanent is not None:
        return permanent
    nothing_loaded = report is not None and not report.loaded and bool(report.failures)
    if returncode == EXIT_NOTHING_LOADED and nothing_loaded:
        # Only as its ready report said: a plugin that exits with the same code after it
        # loaded (os._exit(4) in a method, or in its setup, before the report) crashed.
        return "no plugin could be loaded"
    if wrapped:
        # Every start would go the same way: the wrapper, not a crash, is at fault.
        return "its python runs the runner as a child process (checked again at its next start)"
    return None


def explained_exit(
    reason: str,
    quoted: str,
    returncode: int,
    permanent: str | None,
    *,
    refused: str | None,
    refused_for_good: str | None,
    own_python: bool,
    connected: bool,
    said: str,
    report: ReadyReport | None,
) -> tuple[str, str | None]:
    """Why a runner's life ended (``reason``), with what the host knows besides: why it
    refused its control connection (``refused``; ``refused_for_good``: for a reason no restart
    changes), its last words on stderr (``quoted``); and why restarting cannot help, if it
    cannot (see :func:`lasting_cause`; ``own_python``: a plugin of it names a python)."""
    wrapped = False
    if reason == BEFORE_READY and refused_for_good is not None:
        # Why, in the host's words, naming both sides and the fix: its stderr only repeats
        # the refusal, once per connection it tried.
        return f"{reason}; {refused_for_good}", refused_for_good
    if reason == BEFORE_READY and refused is not None:
        # A wrapper that runs the interpreter as its child, not in its place (exec).
        wrapped = own_python
        hint = " (a wrapper script as `python` must exec the interpreter)" if wrapped else ""
        reason = f"{reason}; the host refused its control connection: {refused}{hint}"
    if quoted:
        # Quoted as the runner's words: a plugin may write anything there, host-like
        # phrases included, and must not be read as the host (see outside_words).
        words = f"its stderr ended with: {outside_words(quoted)}"
        reason = f"{reason}; {words}" if reason else words
    return reason, lasting_cause(
        returncode, permanent, connected=connected, said=said, report=report, wrapped=wrapped
    )
