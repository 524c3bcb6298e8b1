"""The keys of a ``plugin.toml`` against the ones it may hold: every unknown key is named
(with the known key it is closest to, when one is), and a key TOML put in a table it was not
written for is said to be misplaced, with where it belongs.

TOML puts every key written below a ``[table]`` header into that table, up to the next
header. A top-level key added at the end of the file (``entry = ...`` below ``[restart]``)
is read as ``restart.entry``: msgspec would call that an unknown field, and say nothing of
the ``entry`` now missing at the top, nor of the header the key must move above. The same
goes for a key of one table written below the header of another (``max_restarts`` below
``[limits]``), and for a table's key written at the top.

msgspec stops at the first unknown key; a user fixing a file wants them all at once, so the
document's keys are checked here, before msgspec converts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping
from typing import Any

import msgspec
import msgspec.inspect

from isoplug.validation import closest_field, struct_of

__all__ = ["key_problems"]

#: Unknown keys named in one message; the rest are counted.
_MAX_NAMED = 8
#: Characters of one key quoted: a key is the file's text, and may be long.
_MAX_KEY_CHARS = 100
#: Where a key is read or belongs, when that is no table but the file's top level.
_TOP = ""


@dataclasses.dataclass(frozen=True)
class _Misplaced:
    key: str
    #: The table it was read in (``_TOP``: the top level).
    read_in: str
    #: The table it belongs in (``_TOP``: the top level).
    home: str


def key_problems(
    document: Mapping[str, Any], root: type[msgspec.Struct], string_tables: Container[str]
) -> str | None:
    """What is wrong with the keys of ``document`` as the struct ``root`` describes them
    (None: nothing): misplaced keys first, then unknown ones. ``string_tables`` are the
    free-form tables whose values must be strings (``[environment]``): there a known key of
    another kind is misplaced, not a variable."""
    fields = _fields(msgspec.inspect.type_info(root))
    tables = {name: _fields(field.type) for name, field in fields.items()}
    tables = {name: inner for name, inner in tables.items() if inner}
    homes = dict.fromkeys(fields, _TOP)
    for table, names in tables.items():
        for name in names:
            homes.setdefault(name, table)
    required = {name for name, field in fields.items() if field.required}

    def home_of(key: str, value: Any, read_in: str) -> str | None:
        """Where ``key`` belongs, when it is misplaced where it was read; a table-valued key
        is a sub-table (``[restart.x]``), not a key moved by a header."""
        home = homes.get(key)
        if home is None or home == read_in or isinstance(value, Mapping):
            return None
        if home == _TOP and key in document:
            return None  # set at the top too: this one is an unknown key of the table
        return home

    misplaced: list[_Misplaced] = []
    unknown: list[str] = []
    for key, value in document.items():
        if key not in fields:
            home = home_of(key, value, _TOP)
            if home is None:
                unknown.append(key)
            else:
                misplaced.append(_Misplaced(key, _TOP, home))
            continue
        if not isinstance(value, Mapping):
            continue  # msgspec names the wrong type
        for inner, inner_value in value.items():
            if key in tables and inner in tables[key]:
                continue
            home = home_of(inner, inner_value, key)
            # In a table of the schema's a key not its own is wrong anyway; in a free-form one
            # ([config], [environment]) a known name may be a setting of its own, so it is
            # taken for misplaced only where it cannot be one.
            if home is not None and (
                key in tables
                or (home == _TOP and inner in required)
                or (key in string_tables and not isinstance(inner_value, str))
            ):
                misplaced.append(_Misplaced(inner, key, home))
            elif key in tables:
                unknown.append(f"{key}.{inner}")
    said = [
        *_misplaced_problems(misplaced, document, required),
        *_unknown_problem(unknown, root),
    ]
    # msgspec names one missing field at a time: alone, that is its message; with another
    # problem, or more missing, every one is said now.
    moved = {item.key for item in misplaced}
    missing = [
        key for key in fields if key in required and key not in document and key not in moved
    ]
    if len(missing) > 1 or (missing and said):
        verb = "is" if len(missing) == 1 else "are"
        shown = _listed([_quoted(key) for key in missing])
        said.append(f"required field{'s' if len(missing) > 1 else ''} {shown} {verb} missing")
    return "; ".join(said) or None


def _misplaced_problems(
    misplaced: list[_Misplaced], document: Mapping[str, Any], required: set[str]
) -> Iterable[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    for item in misplaced:
        groups.setdefault((item.read_in, item.home), []).append(item.key)
    for (read_in, home), keys in groups.items():
        one = len(keys) == 1
        it, is_ = ("it", "is") if one else ("them", "are")
        names = _listed([_quoted(key) for key in keys])
        if home == _TOP:
            belongs = "a top-level key" if one else "top-level keys"
            where_to = f"move {it} above the first [table] header"
        else:
            belongs = f"a key of [{home}]" if one else f"keys of [{home}]"
            where_to = (
                f"move {it} below the [{home}] header"
                if isinstance(document.get(home), Mapping)
                else f"put {it} below a new [{home}] header"
            )
        if read_in == _TOP:
            top = "a top-level key" if one else "top-level keys"
            yield f"{names} {is_} {belongs}, not {top}: {where_to}"
            continue
        read_as = _listed([_quoted(f"{read_in}.{key}") for key in keys])
        problem = (
            f"{names} {is_} {belongs}, but {'it comes' if one else 'they come'} after the "
            f"[{read_in}] header, so TOML reads {it} as {read_as}"
        )
        missing = [key for key in keys if home == _TOP and key in required]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            shown = _listed([_quoted(key) for key in missing])
            problem += f", and the required top-level {shown} {verb} missing"
        yield f"{problem}: {where_to}"


def _unknown_problem(unknown: list[str], root: type[msgspec.Struct]) -> Iterable[str]:
    if not unknown:
        return
    named = []
    for path in unknown[:_MAX_NAMED]:
        close = closest_field(path, root)
        named.append(_quoted(path) + (f" (did you mean {close!r}?)" if close else ""))
    if len(unknown) > _MAX_NAMED:
        named.append(f"{len(unknown) - _MAX_NAMED} more")
    yield f"unknown field{'s' if len(unknown) > 1 else ''} {_listed(named)}"


def _quoted(key: str) -> str:
    if len(key) <= _MAX_KEY_CHARS:
        return repr(key)
    return f"{key[:_MAX_KEY_CHARS]!r}... ({len(key)} characters)"


def _listed(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _fields(info: msgspec.inspect.Type) -> dict[str, msgspec.inspect.Field]:
    """The fields of the struct ``info`` is, by the name the file uses ({}: not a struct)."""
    table = struct_of(info)
    return {} if table is None else {field.encode_name: field for field in table.fields}
