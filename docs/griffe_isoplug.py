"""A griffe extension that lets mkdocstrings render isoplug's docstrings as written.

The sources follow Sphinx's conventions, which griffe does not read: ``#:`` comments document
the attribute below them, and roles (``:class:`~isoplug.errors.RemoteError```) name other
objects. Here the comments become the attributes' docstrings, and each role becomes a link to
the object's entry in the API reference (plain code where it has none), so that the sources
need not change for the docs.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

#: ``:role:`target``` and ``:role:`title <target>```; ``~`` shows the last part only.
_ROLE = re.compile(r":(?:py:)?(?P<role>class|meth|func|attr|mod|data|exc|obj):`(?P<body>[^`]+)`")
#: reST's literal-block marker at the end of a paragraph; Markdown needs a plain colon.
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)
_SPACED_MARKER = re.compile(r"\s+::$", re.MULTILINE)


class IsoplugDocstrings(griffe.Extension):
    """``#:`` comments as attribute docstrings; Sphinx roles as optional cross-references."""

    def on_attribute_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        attr: griffe.Attribute,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if attr.docstring is not None or not isinstance(node, ast.AST):
            return
        lineno = getattr(node, "lineno", None)
        filepath = attr.filepath
        if lineno is None or isinstance(filepath, list):
            return
        try:
            lines = attr.lines_collection[filepath]
        except KeyError:
            return
        comment: list[str] = []
        index = lineno - 2  # the line above the assignment, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(
                "\n".join(comment), lineno=index + 2, endlineno=lineno - 1, parent=attr
            )

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found.extend(_walk(member))
    return found


def _markdown(text: str, obj: griffe.Object) -> str:
    text = _SPACED_MARKER.sub("", text)
    text = _LITERAL_MARKER.sub(":", text)
    return _ROLE.sub(lambda match: _reference(match["body"], obj), text)


def _reference(body: str, obj: griffe.Object) -> str:
    title = None
    if body.endswith(">") and " <" in body:
        title, _, body = body[:-1].rpartition(" <")
    short = body.startswith("~")
    target = body.lstrip("~.")
    if title is None:
        title = target.rsplit(".", 1)[-1] if short else target
    identifier = _resolve(target, obj)
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _resolve(target: str, obj: griffe.Object) -> str:
    """The full path of ``target`` as named in ``obj``'s scope (itself when unknown)."""
    head, dot, rest = target.partition(".")
    scopes: list[griffe.Object] = [obj]
    parent = obj.parent
    while parent is not None:
        scopes.append(parent)
        parent = parent.parent
    for scope in scopes:
        if head in scope.members:
            return scope.members[head].path + dot + rest
        try:
            return scope.resolve(head) + dot + rest
        except (griffe.NameResolutionError, ValueError):
            continue
    return target
