"""The keys of a configuration that name no field of the plugin's schema (typos), found at any
depth: msgspec drops an unknown key silently unless the struct that should hold it forbids
unknown fields, so a misspelled ``prot`` would leave ``port`` at its default without a word.

The walk follows msgspec's own type info (:mod:`msgspec.inspect`) through every shape that can
hold a table: structs (and their tagged unions, chosen by the tag as msgspec chooses),
dataclasses, TypedDicts, ``Annotated`` metadata, optionals and other unions, lists, sets,
fixed and variadic tuples, named tuples and the values of dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import inspect

__all__ = ["unknown_fields"]

#: (the dotted path of an unknown key, the fields known where it sits)
UnknownKey = tuple[str, list[str]]

TableTypes = inspect.StructType | inspect.DataclassType | inspect.TypedDictType
ItemsTypes = inspect.ListType | inspect.VarTupleType | inspect.SetType | inspect.FrozenSetType


def unknown_fields(value: Any, info: inspect.Type, path: str = "") -> list[UnknownKey]:
    """The keys of ``value`` (a configuration, or part of one) that name no field of the type
    ``info`` describes, all the way down, each with the fields known where it sits."""
    info = unwrap(info)
    if isinstance(info, inspect.UnionType):
        found: list[UnknownKey] = []
        for member in union_members_for(value, info):
            found += [key for key in unknown_fields(value, member, path) if key not in found]
        return found
    if isinstance(info, TableTypes) and isinstance(value, Mapping):
        return unknown_table_keys(value, info, path)
    if isinstance(info, inspect.StructType) and info.array_like and is_sequence(value):
        # An array-like struct is written as a list, its tag (if tagged) first.
        values = list(value)[1:] if info.tag_field is not None else list(value)
        return positional(values, [field.type for field in info.fields], path)
    if isinstance(info, inspect.TupleType) and is_sequence(value):
        return positional(list(value), list(info.item_types), path)
    if isinstance(info, inspect.NamedTupleType) and is_sequence(value):
        return positional(list(value), [field.type for field in info.fields], path)
    if isinstance(info, ItemsTypes) and is_sequence(value):
        return positional(list(value), [info.item_type] * len(value), path)
    if isinstance(info, inspect.DictType) and isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            found += unknown_fields(item, info.value_type, f"{path}{key}.")
        return found
    return []


def union_members_for(value: Any, union: inspect.UnionType) -> list[inspect.Type]:
    """The members of ``union`` that ``value`` would be decoded as. A table picks its tagged
    struct by the tag's value; an unknown tag picks none (msgspec refuses it, naming the tag).
    msgspec allows only one untagged table type in a union, so the rest cannot disagree."""
    members = [unwrap(member) for member in union.types]
    tagged = [
        member
        for member in members
        if isinstance(member, inspect.StructType)
        and member.tag_field is not None
        and not member.array_like
    ]
    if isinstance(value, Mapping) and tagged:
        return [
            member
            for member in tagged
            if member.tag_field in value and value[member.tag_field] == member.tag
        ]
    return members


def unknown_table_keys(
    table: Mapping[Any, Any],
    info: inspect.StructType | inspect.DataclassType | inspect.TypedDictType,
    path: str,
) -> list[UnknownKey]:
    fields = {field.encode_name: field for field in info.fields}
    tag_field = info.tag_field if isinstance(info, inspect.StructType) else None
    found: list[UnknownKey] = []
    for key, item in table.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is not None:
            found += unknown_fields(item, field.type, f"{path}{key}.")
        elif key != tag_field:
            found.append((f"{path}{key}", list(fields)))
    return found


def positional(values: list[Any], types: list[inspect.Type], path: str) -> list[UnknownKey]:
    """Unknown keys in the items of a list whose item ``i`` is of ``types[i]`` (extra items
    are msgspec's to refuse)."""
    found: list[UnknownKey] = []
    for index, (item, kind) in enumerate(zip(values, types, strict=False)):
        found += unknown_fields(item, kind, f"{path.rstrip('.')}[{index}].")
    return found


def unwrap(info: inspect.Type) -> inspect.Type:
    while isinstance(info, inspect.Metadata):
        info = info.type
    return info


def is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence | set | frozenset) and not isinstance(
        value, str | bytes | bytearray
    )
