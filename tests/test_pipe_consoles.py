"""isoplug.logs.pipe_consoles in one process: which handlers it wraps, and what sys.stdout is
while and after they emit."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug.logs.pipe_consoles import render_through
from isoplug.logs.rendered_records import RenderingPipe


class Looking(logging.Handler):
    """Notes what ``sys.stdout`` is while it emits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(sys.stdout)


def _as_stdio(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, io.StringIO]:
    """Two streams standing for the pipes, as sys.stdout and sys.stderr: set in the test's
    body, since pytest's capture sets its own at each phase."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    return out, err


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.pipe_consoles")
    log.propagate = False
    yield log
    for handler in log.handlers[:]:
        log.removeHandler(handler)
        handler.close()


def test_logging_own_handlers_are_left_unwrapped(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger, tmp_path: Path
) -> None:
    """Files, queues and the like never write to stdout: their emit stays as it was, so a
    logging call through them costs nothing more."""
    pipes = _as_stdio(monkeypatch)
    quiet = [logging.NullHandler(), logging.FileHandler(tmp_path / "log.txt")]
    for handler in quiet:
        logger.addHandler(handler)
    render_through(pipes)
    assert [("emit" in vars(handler)) for handler in quiet] == [False, False]


def test_a_handlers_emit_sees_a_rendering_pipe_and_the_pipe_after(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    pipes = _as_stdio(monkeypatch)
    looking = Looking()
    logger.addHandler(looking)
    render_through(pipes)
    render_through(pipes)  # idempotent: one window, not two nested
    logger.warning("looked")
    assert len(looking.seen) == 1
    seen = looking.seen[0]
    assert isinstance(seen, RenderingPipe) and seen.stream is pipes[0]
    assert sys.stdout is pipes[0] and sys.stderr is pipes[1]


def test_a_pipe_held_by_a_handlers_console_is_put_under_a_rendering_pipe(
    monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    pipes = _as_stdio(monkeypatch)

    class Console:
        def __init__(self) -> None:
            self.file = sys.stderr

    holding = Looking()
    holding.console = Console()  # type: ignore[attr-defined]
    logger.addHandler(holding)
    render_through(pipes)
    held = holding.console.file  # type: ignore[attr-defined]
    assert isinstance(held, RenderingPipe) and held.stream is pipes[1]
    assert sys.stderr is pipes[1]
