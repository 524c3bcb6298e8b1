"""The host reads source lines for a plugin's traceback frames from its own disk, guarded
(:mod:`isoplug.logs.sourcelines`): regular source files only, within a budget, escaped, and
dropped from linecache with the frames that name them."""

from __future__ import annotations

import gc
import linecache
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from isoplug.logs import exceptions, sourcelines
from isoplug.logs.exceptions import ExcInfo, exception_data
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData, FrameData


def rebuilt(data: ExceptionData) -> tuple[ExcInfo, str]:
    """A fresh rebuilder's exc_info for ``data`` (the linecache entries made for its frames live
    as long as it does), and the traceback ``Formatter.formatException`` prints for it."""
    exc_info = ExceptionRebuilder().rebuild(data)
    return exc_info, logging.Formatter().formatException(exc_info)


def source_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def raised_in(path: Path) -> BaseException:
    """The ValueError("x...") ``run()`` of the module at ``path`` raises: its frames name that
    file."""
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    with pytest.raises(ValueError, match=r"^x") as caught:
        namespace["run"]()
    return caught.value


@pytest.mark.timeout(20)
def test_hostile_frames_neither_hang_nor_raise(tmp_path: Path) -> None:
    """/dev/zero, a FIFO, a huge file, absurd numbers and 10,000 frames: a bounded rebuild."""
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.py"
    with huge.open("wb") as file:
        file.truncate(sourcelines.MAX_SOURCE_BYTES + 1)
    frames = [
        FrameData("/dev/zero", 1, "zero"),
        FrameData("/dev/zero.py", 1, "zero"),
        FrameData(str(fifo), 1, "fifo", "", 1, 0, 4),
        FrameData(str(huge), 1, "huge"),
        FrameData("relative/module.py", 1, "relative"),
        FrameData("/proc/self/environ", 1, "environ"),
        FrameData(__file__, -5, "negative", "", -7, -3, -1),
        FrameData(__file__, 10**12, "huge_line", "", 10**15, 10**12, 10**13),
        FrameData(__file__, 3, "long_span", "", 10**12, 0, 1),
        FrameData(__file__, None, "", "", None, 5, None),
        *(FrameData(f"/nowhere/{n}.py", n, f"f{n}") for n in range(10_000)),
    ]
    deep = ExceptionData("E", "m", "root", frames[:2])
    for number in range(200):
        deep = ExceptionData("E", "m", str(number), frames[:2], cause=deep)
    exc_info, text = rebuilt(ExceptionData("", "", "", frames, cause=deep, members=[deep] * 500))
    assert text.count('  File "') < 2 * exceptions.MAX_TOTAL_FRAMES
    assert 'File "/dev/zero", line 1, in zero' in text
    assert 'File "/nowhere/9999.py", line 9999, in f9999' in text
    # While its frames live, linecache has an empty entry for these: it never opens them.
    assert linecache.getlines(str(fifo)) == [] and linecache.getlines(str(huge)) == []
    assert linecache.getlines("/proc/self/environ") == []
    del exc_info


def test_source_lines_are_read_safely_escaped_and_released(tmp_path: Path) -> None:
    """A source file is read once, its control characters escaped, and dropped with its frames."""
    path = source_file(
        tmp_path, "plugin_mod.py", 'def run():\n    raise ValueError("x\\x1b")  # \x1b[2J\n'
    )
    data = exception_data(raised_in(path))
    assert data is not None
    linecache.cache.pop(str(path), None)  # the receiver has not seen this file yet
    exc_info = ExceptionRebuilder().rebuild(data)
    entry = linecache.cache[str(path)]
    assert len(entry) == 4 and entry[1] is None  # no mtime: checkcache() never re-reads it
    text = logging.Formatter().formatException(exc_info)
    assert '    raise ValueError("x\\x1b")  # \\x1b[2J' in text.splitlines()
    del exc_info, entry
    gc.collect()
    assert str(path) not in linecache.cache


def test_other_files_and_files_past_the_budget_are_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-source file is never read, nor any source file past the sender's budget."""
    monkeypatch.setattr(sourcelines, "MAX_LOADED_FILES", 1)
    secret = source_file(tmp_path, "id_rsa", "-----BEGIN PRIVATE KEY-----\n")
    first = source_file(tmp_path, "first.py", "first_line = 1\n")
    second = source_file(tmp_path, "second.py", "second_line = 2\n")
    frames = [FrameData(str(path), 1, "f") for path in (secret, first, second)]
    _, text = rebuilt(ExceptionData("E", "m", "", frames))
    assert ("first_line = 1" in text) != ("second_line = 2" in text)  # one of the two only
    assert "PRIVATE KEY" not in text
