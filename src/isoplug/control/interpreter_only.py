"""Variables the host sets for a runner's interpreter alone, and what the plugin's code (and
every program it starts) gets in their place: what they would be without isoplug.

A runner's interpreter needs a setting of its own: ``PYTHONPATH`` with the folder isoplug is
imported from put first (for a normal install, the host's whole ``site-packages``). The
interpreter reads it at its start; left in ``os.environ``, it would reach every process a
plugin starts, and a program of another Python would import the host's packages before its
own. (``PYTHONUNBUFFERED=1`` is the runner's and its children's alike: a Python program a
plugin starts prints to the host line by line too.) So the host records, in
:data:`INTERPRETER_ONLY_VARIABLE`, the value each such variable would have had (the host's,
or the manifest's, or none), and the runner gives those back (:func:`give_back`) before any
plugin code runs, forked or spawned. The runner's ``sys.path`` keeps what the interpreter
read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

import msgspec

__all__ = [
    "INTERPRETER_ONLY_VARIABLE",
    "give_back",
    "isoplug_import_folders",
    "set_for_the_interpreter",
]

#: JSON: each variable set for the interpreter alone -> its value for the plugin (null: unset).
INTERPRETER_ONLY_VARIABLE = "ISOPLUG_INTERPRETER_ONLY"

_decode = msgspec.json.Decoder(dict[str, str | None]).decode
_encode = msgspec.json.Encoder().encode

#: What this process's interpreter got in ``PYTHONPATH`` at its start, and what the plugin got
#: instead (set by :func:`give_back`).
_interpreter_pythonpath: str | None = None
_plugin_pythonpath: str | None = None


def set_for_the_interpreter(env: MutableMapping[str, str], settings: Mapping[str, str]) -> None:
    """Set ``settings`` in ``env``, noting what each changed variable was, for
    :func:`give_back`. A note already in ``env`` (a manifest's ``[environment]``) is replaced:
    only the host says what the runner gives back."""
    before = {name: env.get(name) for name, value in settings.items() if env.get(name) != value}
    env.update(settings)
    if before:
        env[INTERPRETER_ONLY_VARIABLE] = _encode(before).decode()
    else:
        env.pop(INTERPRETER_ONLY_VARIABLE, None)


def give_back(environ: MutableMapping[str, str] | None = None) -> None:
    """Put back in ``environ`` (``os.environ``: the C library's environment with it, which child
    processes get) what the host set for the interpreter alone; call it before any plugin code
    runs. Raises :class:`ValueError` naming the problem when the host's note is not one."""
    global _interpreter_pythonpath, _plugin_pythonpath  # noqa: PLW0603 (once per runner)
    target = os.environ if environ is None else environ
    note = target.pop(INTERPRETER_ONLY_VARIABLE, None)
    if note is None:
        return
    try:
        values = _decode(note)
    except msgspec.DecodeError as exc:
        raise ValueError(
            f"{INTERPRETER_ONLY_VARIABLE} must be a JSON object of variable names to strings "
            f"or null, as the host sets it ({exc}); start runners through a Host"
        ) from None
    if "PYTHONPATH" in values:
        _interpreter_pythonpath = target.get("PYTHONPATH")
        _plugin_pythonpath = values["PYTHONPATH"]
    for name, value in values.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def isoplug_import_folders() -> list[str]:
    """The folders the host put on this runner's ``PYTHONPATH`` so that it imports isoplug (and
    that :func:`give_back` took off for the plugin): what a child process of another
    interpreter needs on its own ``PYTHONPATH`` to import the same isoplug. Empty when the host
    added none (isoplug is found without them)."""
    if not _interpreter_pythonpath:
        return []
    own = set(_plugin_pythonpath.split(os.pathsep)) if _plugin_pythonpath else set()
    return [entry for entry in _interpreter_pythonpath.split(os.pathsep) if entry not in own]
