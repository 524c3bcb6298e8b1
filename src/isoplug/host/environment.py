"""What a runner process gets of the host's environment: by default, only what a Python
program needs to run, never the host's secrets.

A host's environment holds its database passwords, API keys and cloud credentials; a
third-party plugin has no business reading them (go-plugin does not pass them either). So a
runner gets:

1. the variables of :data:`BASE_VARIABLES` that the host has (paths, locale, time zone,
   terminal, every ``PYTHON*`` setting of the interpreter but :data:`WITHHELD`, CA bundles);
2. the host's variables that its plugins' ``inherit_environment`` names or matches
   (``["DATABASE_URL", "AWS_*"]``), and those of ``SupervisorConfig.inherit_environment``;
3. its plugins' ``[environment]`` tables;
4. what isoplug needs (unbuffered output, isoplug's own import path, the runner tag). The
   import path is the folder the host imports isoplug from, or, for a runner with an
   interpreter of its own, a folder holding isoplug alone (:mod:`isoplug.host.isoplug_link`):
   the host's other packages never shadow that interpreter's. The first two are for the
   runner's interpreter alone: the runner gives the plugin's code the values they would have
   had without isoplug (:mod:`isoplug.control.interpreter_only`), so that a program the plugin
   starts never imports the host's packages.

``[environment]`` values are passed as written: a relative path in one (``PYTHONPATH =
"lib"``) is relative to the runner's working directory, the host's, not to the plugin's
folder (``sys_path`` and ``python`` are; use ``sys_path`` for import folders).

``inherit_environment = true`` (in a manifest, for that plugin's runner) or
``SupervisorConfig(inherit_environment=True)`` (for every runner) passes the whole host
environment, as before this existed; :data:`WITHHELD` still stays out.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence

from isoplug.control.interpreter_only import set_for_the_interpreter
from isoplug.host.isoplug_link import host_package_root, isoplug_only_folder
from isoplug.host.manifest_types import Manifest

__all__ = ["BASE_VARIABLES", "WITHHELD", "runner_environment"]

#: Always passed when the host has them: what a Python program needs to run like the host
#: does, and nothing that is commonly a secret. Patterns as in :mod:`fnmatch`.
BASE_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TMPDIR",
    "TEMP",
    "TMP",
    # The interpreter's own settings, whichever version reads them (`python --help-env`; and
    # PYTHONASYNCIODEBUG, PYTHONBREAKPOINT, PYTHONUSERBASE... read by the standard library):
    # the runner runs as the host does. Command-line flags (-O, -X dev) are the host's alone.
    "PYTHON*",
    "VIRTUAL_ENV",
    # isoplug's own runner setting: the event loop (isoplug.runner.eventloop).
    "ISOPLUG_EVENT_LOOP",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    # Windows: a process without them cannot start Python or find its profile.
    "SYSTEMROOT",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
)

#: Never passed, whatever lets them through: ``PYTHONINSPECT`` turns a ``sys.exit()`` at the
#: end of a runner (and of the zygote) into an interactive prompt, which reads the runner's
#: stdin and ends with status 1 whatever the runner's own was.
WITHHELD = frozenset({"PYTHONINSPECT"})


def runner_environment(
    manifests: Sequence[Manifest],
    inherit: Sequence[str] | bool = (),
    host_environment: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the runner of ``manifests``; ``inherit`` is the host's setting
    (``SupervisorConfig.inherit_environment``)."""
    source = dict(os.environ if host_environment is None else host_environment)
    if inherit is True or any(m.inherit_environment is True for m in manifests):
        env = source
    else:
        patterns = [*BASE_VARIABLES, *(() if inherit is False else inherit)]
        for manifest in manifests:
            if not isinstance(manifest.inherit_environment, bool):
                patterns += manifest.inherit_environment
        env = {name: value for name, value in source.items() if _matches(name, patterns)}
    for manifest in manifests:
        env.update(manifest.environment)
    for name in WITHHELD:
        env.pop(name, None)
    # The runner imports isoplug from wherever this host imported it (a source checkout too);
    # an interpreter of the plugin's own gets isoplug alone, not the host's site-packages.
    own_python = any(m.python is not None for m in manifests)
    package_root = isoplug_only_folder() if own_python else host_package_root()
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    # print() in a plugin, and in a Python program it starts, must reach the host line by
    # line, not in 8 KiB blocks at exit (lost if that program is killed).
    env["PYTHONUNBUFFERED"] = "1"
    # For the runner's interpreter alone: a program the plugin starts gets the plugin's.
    settings: dict[str, str] = {}
    if package_root not in paths:
        settings["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    set_for_the_interpreter(env, settings)
    return env


def _matches(name: str, patterns: Iterable[str]) -> bool:
    # Case-sensitive, as POSIX environments are (fnmatch would fold case on Windows).
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
