"""A manifest's ``[environment]`` table: what the host checks of each variable, and the JSON
Schema that tells an editor the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isoplug.host.environment import WITHHELD
from isoplug.host.manifest_types import ManifestError
from isoplug.validation import kind_of

__all__ = ["ENVIRONMENT_SCHEMA", "check_variable"]

#: What parse_manifest checks of ``[environment]`` after decoding, for editors: names not
#: empty, without "=" or NUL, none withheld from runners; values strings without NUL.
ENVIRONMENT_SCHEMA = {
    "propertyNames": {
        "minLength": 1,
        "pattern": "^[^=\\u0000]*$",
        "not": {"enum": sorted(WITHHELD)},
    },
    "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
}


def check_variable(path: Path, name: str, value: Any) -> None:
    """One variable of ``[environment]``: a name the kernel takes and isoplug passes on, and a
    string."""
    field = f"environment.{name}"
    if not isinstance(value, str):
        # Not quoted back: a number or a word left unquoted (a PIN, a token) is a secret too.
        problem = (
            f"must be a string, got {kind_of(value)} (its value is not shown: environment "
            f'values may be secrets); quote it: {name} = "..."'
        )
        raise ManifestError(path, field, problem)
    name_problem = (
        "it is empty"
        if not name
        else "it holds '=', which ends a name"
        if "=" in name
        else "it holds a NUL character"
        if "\0" in name
        else None
    )
    if name_problem is not None:
        raise ManifestError(
            path, field, f"is not a valid environment variable name: {name_problem}"
        )
    if "\0" in value:
        # The value is not quoted: environment variables hold secrets.
        problem = "its value holds a NUL character, which no environment variable can hold"
        raise ManifestError(path, field, problem)
    if name in WITHHELD:
        problem = (
            "is never passed to a runner: it turns the runner's exit into an interactive "
            "prompt, and its exit status is lost; remove it"
        )
        raise ManifestError(path, field, problem)
