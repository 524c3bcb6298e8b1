"""Every code block of README.md and docs/*.md works as shown, so that none can rot.

A block's role comes from an HTML comment right before it (invisible on GitHub and in the
site), ``<!-- isoplug-test: ROLE -->``:

- ``run`` (the default for ``python`` blocks): saved as a script and run with this Python, in
  a folder of its own holding the ``file=`` blocks above it in the same document; it must exit
  0 within a minute. An ``output`` block right after it shows what it prints.
- ``file=PATH``: the block is the file ``PATH`` of that folder (a plugin's manifest or code);
  a Python one is compiled here. Runs below it in the document see it.
- ``pytest``: a test module, run with pytest in that folder; it must pass.
- ``compile``: deliberately partial (a fragment of a larger program): compiled only, with
  top-level ``await`` allowed.
- ``output``: the output of the run just above (stdout, then stderr). ``...`` in a
  line matches any text; the lines may come in any order (a plugin's records are replayed by
  the host's threads), and a last line ``...`` allows more lines.

Every whole Python block (``run``, ``pytest``, a ``file=`` ending in ``.py``) also passes
``mypy --strict``, as a typed application's code must.

``console`` and ``sh`` blocks are checked without running them: every ``isoplug`` command
parses with the command line's own parser, every ``make`` target exists, every extra that
``pip install`` names is declared. ``toml`` blocks are manifests, checked by
``tests/test_docs_examples.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug.cli.parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
#: A fence opening, possibly indented (in a list): its indent, backticks or tildes, language.
_OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*isoplug-test:\s*(?P<role>.*?)\s*-->\s*$")
_ROLES = ("run", "file", "pytest", "compile", "output")
_SHELLS = ("console", "sh", "shell", "bash")
#: A run may start a host with plugins, a pytest run a few: far less than this.
_RUN_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    role: str  # one of _ROLES, or "" for blocks that are only read
    argument: str  # the PATH of file=
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the role its comment gave it."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    directive: tuple[int, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _DIRECTIVE.match(line)
        if found:
            if directive is not None:
                raise AssertionError(f"{path}:{directive[0]}: a directive with no block after it")
            directive = (index + 1, found["role"])
            index += 1
            continue
        opening = _OPENING.match(line)
        if opening is None:
            if line.strip() and directive is not None:
                raise AssertionError(f"{path}:{directive[0]}: the directive is not before a block")
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            text = lines[index]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            index += 1
        if index == len(lines):
            raise AssertionError(f"{path}:{len(lines)}: unclosed code block")
        role, argument = "", ""
        if directive is not None:
            role, _, argument = directive[1].partition("=")
            if role not in _ROLES or (role == "file") != bool(argument):
                raise AssertionError(
                    f"{path}:{directive[0]}: unknown directive {directive[1]!r} (known: run, "
                    "file=PATH, pytest, compile, output)"
                )
        elif language == "python":
            role = "run"
        blocks.append(
            Block(path, index - len(body), language, role, argument, "\n".join(body) + "\n")
        )
        directive = None
        index += 1
    if directive is not None:
        raise AssertionError(f"{path}:{directive[0]}: a directive with no block after it")
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOCUMENTS for block in parse(path)]


def sandbox_for(block: Block, folder: Path) -> Path:
    """``folder`` with every ``file=`` block above ``block`` in its document written out."""
    for earlier in parse(block.path):
        if earlier.line >= block.line:
            break
        if earlier.role == "file":
            target = folder / earlier.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(earlier.text)
    return folder


def output_of(block: Block) -> Block | None:
    """The ``output`` block right after ``block`` in its document, if any."""
    blocks = parse(block.path)
    following = blocks[blocks.index(block) + 1 :]
    return following[0] if following and following[0].role == "output" else None


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "NO_COLOR": "1"}
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        command,
        cwd=folder,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT,
        check=False,
    )


#: A host's or a receiver's sweep of socket folders that dead processes left in the shared
#: temporary folder (other programs' on this machine): not the example's output.
_SWEPT = re.compile(r"isoplug\.(host|logs): removed \d+ socket folders of dead isoplug processes\b")


def lines_match(expected: str, actual: str) -> str | None:
    """None when every expected line matches its own actual line (any order), and every
    actual line is matched unless the last expected line is ``...``; else what differs."""
    checker = doctest.OutputChecker()
    wanted = expected.rstrip("\n").splitlines()
    more_allowed = bool(wanted) and wanted[-1].strip() == "..."
    if more_allowed:
        wanted = wanted[:-1]
    # A host that starts removes the socket folders of hosts killed before it on this machine
    # and says so: another test's, another run's; no example shows that line.
    left = [
        line.rstrip()
        for line in actual.splitlines()
        if not _SWEPT.search(line) or any(_SWEPT.search(shown) for shown in wanted)
    ]
    missing = []
    for line in wanted:
        for position, candidate in enumerate(left):
            if checker.check_output(line.rstrip() + "\n", candidate + "\n", doctest.ELLIPSIS):
                del left[position]
                break
        else:
            missing.append(line)
    problems = [f"expected, not printed: {line!r}" for line in missing]
    if not more_allowed:
        problems += [f"printed, not expected: {line!r}" for line in left]
    return "\n".join(problems) or None


def _blocks_with(*roles: str) -> list[Block]:
    return [block for block in all_blocks() if block.role in roles]


def _ids(blocks: list[Block]) -> list[str]:
    return [block.name for block in blocks]


RUNNABLE = _blocks_with("run", "pytest")
COMPILED = _blocks_with("file", "compile")


@pytest.mark.parametrize("block", RUNNABLE, ids=_ids(RUNNABLE))
def test_example_runs_as_shown(block: Block, tmp_path: Path) -> None:
    folder = sandbox_for(block, tmp_path)
    if block.role == "pytest":
        (folder / "test_example.py").write_text(block.text)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-p", "no:randomly", "test_example.py"]
    else:
        (folder / "example.py").write_text(block.text)
        command = [sys.executable, "example.py"]
    result = run(command, folder)
    # Apart: a print() and a log record written by another thread at once would mix in one
    # pipe (print() writes the line, then its end); the lines match in any order anyway.
    printed = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.name} exited {result.returncode}:\n{printed}"
    shown = output_of(block)
    if shown is not None:
        problem = lines_match(shown.text, printed)
        assert problem is None, f"{block.name}: output differs:\n{problem}\n--\n{printed}"


@pytest.mark.parametrize("block", COMPILED, ids=_ids(COMPILED))
def test_partial_example_compiles(block: Block) -> None:
    if block.role == "file" and not block.argument.endswith(".py"):
        assert block.language != "python", f"{block.name}: Python code in {block.argument}"
        return
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if block.role == "compile" else 0
    compile(block.text, block.name, "exec", flags=flags, dont_inherit=True)


def test_whole_examples_type_check(tmp_path: Path) -> None:
    """Every whole Python example (a run, a pytest module, a plugin's file) passes
    ``mypy --strict``, as a typed application's code must: two ran as shown and failed it
    (an Optional ``last_exit`` and ``pid`` used unchecked; a record's extra read as an
    attribute of ``LogRecord``). Fragments (``compile``) are left out. One mypy run, ~5 s."""
    whole = [
        block
        for block in _blocks_with("run", "pytest", "file")
        if block.language == "python" and (block.role != "file" or block.argument.endswith(".py"))
    ]
    files = []
    for block in whole:
        # A module each, named after where it is shown (mypy's messages say so).
        stem = re.sub(r"\W", "_", block.path.relative_to(ROOT).with_suffix("").as_posix())
        target = tmp_path / f"{stem}_line{block.line}.py"
        target.write_text(block.text)
        files.append(target.name)
    environment = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".cache"), *files],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def shell_commands() -> Iterator[tuple[Block, str]]:
    for block in all_blocks():
        if block.language not in _SHELLS:
            continue
        for line in block.text.splitlines():
            command = line.removeprefix("$ ").split("#", 1)[0].strip()
            if command and (block.language != "console" or line.startswith("$ ")):
                yield block, command


SHELL = list(shell_commands())


@pytest.mark.parametrize(("block", "command"), SHELL, ids=[c for _, c in SHELL])
def test_shell_command_exists(block: Block, command: str) -> None:
    words = shlex.split(command)
    if words[0] == "isoplug":
        parser = build_parser()
        try:
            parser.parse_args(words[1:])
            parsed = True
        except SystemExit as exc:  # --help and --version exit 0
            parsed = exc.code == 0
        assert parsed, f"{block.name}: {command!r} does not parse"
    elif words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE)
        for target in words[1:]:
            assert target in targets, f"{block.name}: no make target {target!r}"
    elif words[:2] == ["pip", "install"]:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        extras = project["optional-dependencies"]
        for word in words[2:]:
            name, _, rest = word.partition("[")
            if name in (project["name"], "."):
                for extra in filter(None, rest.rstrip("]").split(",")):
                    assert extra in extras, f"{block.name}: no extra {extra!r} in pyproject"


def test_the_collector_finds_every_kind_of_block() -> None:
    """A failure here means the collector checks nothing of some kind (a changed syntax)."""
    roles = {block.role for block in all_blocks()}
    assert roles >= {"run", "file", "output", "compile", "pytest"}, roles
    readme = parse(ROOT / "README.md")
    assert any(b.role == "run" and "isoplug.Host(" in b.text for b in readme)
    assert any(b.role == "run" and "forward_logs" in b.text for b in readme)
    commands = [command.split()[0] for _, command in SHELL]
    assert {"isoplug", "make", "pip"} <= set(commands), commands


def test_a_wrong_output_is_caught() -> None:
    assert lines_match("a\nb ... c\n", "b x c\na\n") is None
    assert lines_match("a\n...\n", "a\nb\n") is None
    assert lines_match("a\n", "a\nb\n") == "printed, not expected: 'b'"
    assert lines_match("a\nc\n", "a\n") == "expected, not printed: 'c'"


def test_a_directive_must_be_known(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text("<!-- isoplug-test: runn -->\n```python\npass\n```\n")
    with pytest.raises(AssertionError, match="unknown directive 'runn'"):
        parse(document)
    document.write_text("<!-- isoplug-test: run -->\ntext\n```python\npass\n```\n")
    with pytest.raises(AssertionError, match="not before a block"):
        parse(document)


def _templates() -> list[str]:
    """Every string literal of isoplug's code but docstrings, placeholders (``%s``, f-string
    fields) as ``…``."""
    found = []
    for path in (ROOT / "src" / "isoplug").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            if isinstance(node, ast.JoinedStr):
                found.append(
                    "".join(
                        str(part.value) if isinstance(part, ast.Constant) else "…"
                        for part in node.values
                    )
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return [re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdfgr]", "…", text) for text in found]


def quoted_messages() -> list[str]:
    """The messages quoted in the tables of docs/operations.md's "What the host logs"."""
    text = (ROOT / "docs" / "operations.md").read_text().partition("## What the host logs")[2]
    return [
        match.group(1)
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| level") and "---" not in line
        for match in [re.search(r"`([^`]+)`", line)]
        if match
    ]


MESSAGES = quoted_messages()


def test_the_operations_page_quotes_messages() -> None:
    assert len(MESSAGES) >= 20, MESSAGES


@pytest.mark.parametrize("message", MESSAGES)
def test_a_quoted_host_message_is_in_the_code(message: str) -> None:
    """docs/operations.md quotes each message as the code says it: ``…`` for what varies,
    ``<exit account>`` between parts the code writes separately."""
    for chunk in filter(str.strip, message.split("<exit account>")):
        parts = chunk.lstrip(";: ").split("…")
        pattern = re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)
        assert any(pattern.search(template) for template in TEMPLATES), chunk


TEMPLATES = _templates()


def _slug(heading: str) -> str:
    """The anchor GitHub (and MkDocs' default) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]


@pytest.mark.parametrize("target", readme_links())
def test_a_readme_link_leads_somewhere(target: str) -> None:
    """The README's links into docs/ (which mkdocs --strict does not see) are not broken."""
    path, _, anchor = target.partition("#")
    document = ROOT / path if path else ROOT / "README.md"
    assert document.exists(), target
    if anchor:
        headings = re.findall(r"^#+ (.+)$", document.read_text(), re.MULTILINE)
        assert anchor in {_slug(h) for h in headings}, target


def test_the_host_page_lists_every_supervisor_setting_with_its_default() -> None:
    """docs/host.md's table of ``SupervisorConfig`` has a row for every field, whose default
    column names the field's real default (``15 s``, ``1,024``, ``64 MiB``, ``none``, ``()``)."""
    from isoplug import SupervisorConfig

    rows = {
        match.group(1): match.group(2).strip()
        for line in (ROOT / "docs" / "host.md").read_text().splitlines()
        for match in [re.match(r"\| `(\w+)` \| ([^|]+) \|", line)]
        if match
    }
    for field in dataclasses.fields(SupervisorConfig):
        assert field.name in rows, f"docs/host.md's SupervisorConfig table lacks {field.name}"
        default = field.default
        said = rows[field.name].replace(",", "").removesuffix(" s")
        if default is None:
            assert said == "none", (field.name, said)
        elif isinstance(default, tuple):
            assert said == f"`{default!r}`", (field.name, said)
        elif said.endswith(" MiB"):
            assert float(said.removesuffix(" MiB")) * 2**20 == default, (field.name, said)
        else:
            assert float(said) == default, (field.name, said, default)
