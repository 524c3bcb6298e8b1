"""msgspec's validation errors in the words of the file a user wrote.

isoplug validates plugin manifests (``plugin.toml``) and plugin configurations (against the
schema a plugin declares) with ``msgspec``, which says what is wrong and where as
``Expected `float` >= 0.0 - at `$.restart.window```. :func:`explain_validation_error` turns
that into a field path and a sentence: ``restart.window``, ``must be a number of 0 or more,
got integer -1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect

__all__ = [
    "SECRET_NOT_SHOWN",
    "ExplainedError",
    "closest_field",
    "explain_validation_error",
    "kind_of",
    "may_be_secret",
    "struct_of",
]

#: msgspec ends a message with where the problem is: `` - at `$.cache.seconds```.
_AT = " - at `$"
# DOTALL: a field's name is the file's text and may hold a newline.
_NAMED_FIELD = re.compile(
    r"^Object (?P<what>contains unknown|missing required) field `(?P<name>.*)`$", re.DOTALL
)
_EXPECTED = re.compile(r"^Expected `(?P<kinds>[^`]*)`(?P<constraint>[^,]*)(?:, got `[^`]*`)?$")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$")
_KIND_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "datetime": "a date and time",
    "date": "a date",
    "time": "a time",
}
_MISSING = object()

#: What an error says instead of the value of a field whose name looks like a secret's.
SECRET_NOT_SHOWN = "its value is not shown: it may be a secret"
# A word of a field's name that ends so names a secret (``token``, ``apitoken``, ``keys``).
_SECRET_WORD = re.compile(
    r"(password|passwd|passphrase|pwd|secret|token|key|credential|auth|authorization"
    r"|cookie|signature|private)s?$",
    re.IGNORECASE,
)
# Too short to be taken as an ending (``spin``): whole words only.
_SECRET_WHOLE_WORDS = frozenset({"pin", "pins", "pwd", "otp"})
# Between words: anything not a letter or digit, or a lower-case letter before a capital.
_WORD_BREAK = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_INDEX = re.compile(r"\[\d+\]")


def may_be_secret(path: str | None) -> bool:
    """Whether a field at ``path`` (``db.password``, ``servers[0].apiToken``) is named as a
    secret is (a word of any of its names, or its end: ``api_token``, ``DBPassword``,
    ``credentials.user``): its value is then never quoted in an error, which reaches logs and
    terminals that the secret must not."""
    if not path:
        return False
    names = _INDEX.sub(".", path).split(".")
    return any(
        _SECRET_WORD.search(word) or word.lower() in _SECRET_WHOLE_WORDS
        for name in names
        for word in _WORD_BREAK.split(name)
        if word
    )


@dataclasses.dataclass(frozen=True)
class ExplainedError:
    #: The field's path (``restart.window``, ``capabilities[0]``); None: the whole document.
    field: str | None
    #: What is wrong with it, as a sentence fragment (``must be a string, got integer 1``).
    problem: str


def explain_validation_error(
    message: str,
    document: Any,
    hints: Mapping[str, str] | None = None,
    schema: type | None = None,
) -> ExplainedError:
    """Explain msgspec's ``message`` about ``document`` (the data that failed to convert to
    the type ``schema``, which names the values an enumeration allows).

    ``hints`` says, by field path, what a value must look like where msgspec's own words
    would be a bare regular expression.
    """
    problem, where, value = _split_location(message, document)
    secret = may_be_secret(where)
    named = _NAMED_FIELD.match(problem)
    if named is not None:
        field = f"{where}.{named['name']}" if where else named["name"]
        if named["what"] == "missing required":
            return ExplainedError(field, "is required but missing")
        return ExplainedError(field, "is not a known field")
    hint = (hints or {}).get(where)
    if hint is not None and "regex" in problem:
        if secret:
            return ExplainedError(where, f"is not valid: {hint} ({SECRET_NOT_SHOWN})")
        return ExplainedError(where, f"{value!r} is not valid: {hint}")
    expected = _EXPECTED.match(problem)
    enum = _ENUM.match(problem)
    if expected is not None:
        kinds = [_KIND_NAMES.get(k.strip(), k.strip()) for k in expected["kinds"].split("|")]
        shown = "must be " + " or ".join(k for k in kinds if k != "null")
        shown += _constraint(expected["constraint"])
        if value is not _MISSING:
            shown += f", got {kind_of(value)}"
            shown += f" ({SECRET_NOT_SHOWN})" if secret else f" {value!r}"
    elif enum is not None and (choices := _choices(schema, where)):
        # The allowed values are the schema's, not the user's: they may be shown.
        got = f"({SECRET_NOT_SHOWN})" if secret else f"got {enum['value']}"
        shown = f"must be one of {', '.join(map(repr, choices))}, {got}"
    elif enum is not None:
        shown = (
            f"is not one of the values allowed here ({SECRET_NOT_SHOWN})"
            if secret
            else f"{enum['value']} is not one of the values allowed here"
        )
    else:  # another kind of message: msgspec's words, unquoted
        shown = problem.replace("`", "")
    return ExplainedError(where or None, shown)


def _choices(schema: type | None, where: str) -> list[Any]:
    """The values the enumeration at ``where`` in ``schema`` allows ([] if unknown)."""
    if schema is None:
        return []
    try:
        node: Any = msgspec.json.schema(schema)
    except (TypeError, ValueError):  # not a type msgspec can describe
        return []
    definitions = node.get("$defs", {})
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", where):
        node = _resolved(node, definitions)
        if part.startswith("["):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    node = _resolved(node, definitions)
    for option in [node, *node.get("anyOf", [])]:
        resolved = _resolved(option, definitions)
        if "enum" in resolved:
            return list(resolved["enum"])
    return []


def _resolved(node: Any, definitions: Mapping[str, Any]) -> Any:
    reference = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(reference, str):
        return definitions.get(reference.rpartition("/")[2], {})
    return node if isinstance(node, dict) else {}


def _constraint(text: str) -> str:
    text = text.strip()
    if text in (">= 0", ">= 0.0"):
        return " of 0 or more"
    if text == "of length >= 1":
        return " that is not empty"
    bound = re.fullmatch(r"([<>]=) (\S+)", text)
    if bound is not None:
        # The bound itself: a float bound also refuses inf and nan, which it need not name.
        which = "at most" if bound[1] == "<=" else "at least"
        return f" of {which} {_number(bound[2])}"
    return f" {text}" if text else ""


def _number(text: str) -> str:
    """A bound as msgspec writes it (``1000000000000.0``), as a person would (``1e12``)."""
    if not re.fullmatch(r"-?\d+\.\d+(e[-+]?\d+)?", text):
        return text
    return f"{float(text):g}".replace("e+", "e")


def kind_of(value: Any) -> str:
    """The TOML (or JSON) name of ``value``'s type, as an error message says it."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    names.update({list: "list", dict: "table"})
    return names.get(type(value), type(value).__name__)


def _split_location(message: str, document: Any) -> tuple[str, str, Any]:
    """msgspec's ``message`` as (problem, field path, the value there or ``_MISSING``).

    A field's name is the user's text and may itself hold `` - at `$`` or dots: of the places
    the location may start, the one whose path leads to a value of ``document`` is it (the
    first such, from the start: a name holding the marker is part of the path); when none
    does, the last one.
    """
    if not message.endswith("`"):
        return message, "", _MISSING
    for start in (m.start() for m in re.finditer(re.escape(_AT), message)):
        path = message[start + len(_AT) : -1]
        value = _resolve(document, path, 0)
        if value is not _UNRESOLVED:
            return message[:start], path.lstrip("."), value
    return message, "", _MISSING


_UNRESOLVED = object()
#: msgspec's step for "some key of this mapping" (``$[...]``).
_ANY_KEY = "[...]"
_INDEX = re.compile(r"\[(\d+)\]")


def _resolve(document: Any, path: str, depth: int) -> Any:
    """The value at msgspec's ``path`` (``.cache.seconds``, ``.tags[0]``) in ``document``:
    ``_UNRESOLVED`` when the path does not lead into it, ``_MISSING`` when it does but the
    value is not known (a step through ``[...]``). Keys are matched against the document's
    own, so that a key holding a dot or a bracket is one step."""
    if not path:
        return document
    if depth > 200:
        return _UNRESOLVED
    if path.startswith(_ANY_KEY):
        if isinstance(document, Mapping):
            for item in document.values():
                if _resolve(item, path[len(_ANY_KEY) :], depth + 1) is not _UNRESOLVED:
                    return _MISSING
        return _UNRESOLVED
    index = _INDEX.match(path)
    if index is not None:
        position = int(index[1])
        if isinstance(document, list | tuple) and position < len(document):
            return _resolve(document[position], path[index.end() :], depth + 1)
        return _UNRESOLVED
    if path.startswith(".") and isinstance(document, Mapping):
        rest = path[1:]
        for key in document:
            if not (isinstance(key, str) and rest.startswith(key)):
                continue
            after = rest[len(key) :]
            if after and after[0] not in ".[":
                continue
            found = _resolve(document[key], after, depth + 1)
            if found is not _UNRESOLVED:
                return found
    return _UNRESOLVED


def closest_field(dotted: str, root: type[msgspec.Struct]) -> str | None:
    """The field of ``root`` closest to the unknown one at ``dotted`` (``restart.backof``:
    ``backoff_max``...), among those of the table it is in; None when none is close (a typo's
    "did you mean")."""
    parent, _, name = dotted.rpartition(".")
    info: msgspec.inspect.Type = msgspec.inspect.type_info(root)
    for part in parent.split(".") if parent else ():
        table = struct_of(info)
        fields = {} if table is None else {f.encode_name: f.type for f in table.fields}
        if part not in fields:
            return None
        info = fields[part]
    table = struct_of(info)
    if table is None:
        return None
    close = difflib.get_close_matches(name, [f.encode_name for f in table.fields], n=1)
    return close[0] if close else None


def struct_of(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    """The struct ``info`` is, or the one struct of the union it is (``Table | None``)."""
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [kind for kind in info.types if isinstance(kind, msgspec.inspect.StructType)]
        return structs[0] if len(structs) == 1 else None
    return info if isinstance(info, msgspec.inspect.StructType) else None
