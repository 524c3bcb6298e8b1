"""What ``isoplug run`` says on stderr when stderr shares a file with the console (``> log
2>&1``, a container's terminal: each message whole, after the console lines it sums up) or
cannot be written at all (its reader gone: nothing ends for it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.test_cli_all_failed import BROKEN
from tests.test_cli_exits import ENV, write_plugin

#: Plugins that cannot be imported: every one fails for good at once, and the command ends.
FAILING = ("a", "b", "c", "d")


def failing_plugins(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    for plugin_id in FAILING:
        write_plugin(directory, plugin_id, BROKEN)
    return directory


def one_socket_for_both(*arguments: str, module: str = "isoplug") -> tuple[int, list[bytes]]:
    """``python -m MODULE ARGUMENTS`` with stdout and stderr one socket of packets, each
    packet one ``write()``: its exit code and its packets, in the order written."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    packets: list[bytes] = []

    def read() -> None:
        while packet := ours.recv(1 << 20):
            packets.append(packet)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with theirs:
            code = subprocess.run(
                [sys.executable, "-m", module, *arguments],
                stdout=theirs.fileno(),
                stderr=theirs.fileno(),
                env=ENV,
                timeout=60,
                check=False,
            ).returncode
    finally:
        reader.join(60)
        ours.close()
    return code, packets


def closing_message(packets: list[bytes], words: bytes) -> tuple[str, str]:
    """The one packet holding ``words`` (a message written whole: a console line written
    between its text and its newline would splice into it), and all that was written before
    it."""
    (message,) = [p for p in packets if words in p]
    return message.decode(), b"".join(packets[: packets.index(message)]).decode()


def test_each_stderr_message_is_one_write_after_the_console_lines_it_sums_up(
    tmp_path: Path,
) -> None:
    """The closing message ("every plugin failed for good") is one packet, whole, and comes
    after the console line of each plugin's failure (its import's, or its runner's exit)."""
    code, packets = one_socket_for_both("run", str(failing_plugins(tmp_path)))
    output = b"".join(packets).decode()
    assert code == 1, output
    message, before = closing_message(packets, b"every plugin failed for good")
    assert message.startswith("isoplug run: every plugin failed for good (4)"), message
    assert message.endswith("\n") and all(f"\n  {p}: " in message for p in FAILING), message
    for plugin_id in FAILING:
        assert re.search(rf"plugin {plugin_id}: (cannot be loaded|failed): ", before), output


def test_demo_says_no_plugin_was_ready_after_the_console_lines_it_sums_up(
    tmp_path: Path,
) -> None:
    """``isoplug demo`` whose plugins all fail: "no plugin was ready", one packet, comes after
    the console line of each plugin's failure, as run's closing message does, however late
    the console writes them (tests/slow_console_child.py)."""
    code, packets = one_socket_for_both(
        "demo",
        "--plugins-dir",
        str(failing_plugins(tmp_path)),
        "--duration",
        "1",
        module="tests.slow_console_child",
    )
    output = b"".join(packets).decode()
    assert code == 1, output
    message, before = closing_message(packets, b"no plugin was ready")
    assert message.startswith("isoplug demo: no plugin was ready (4): "), message
    for plugin_id in FAILING:
        assert re.search(rf"plugin {plugin_id}: (cannot be loaded|failed): ", before), output


def test_a_stderr_whose_reader_is_gone_ends_nothing(tmp_path: Path) -> None:
    """stderr a pipe whose reader has gone (a log shipper that died), stdout a file: the
    command runs to its end as with a live stderr, its console complete, exit code 1 (every
    plugin failed), not 141 (the code for stdout's reader gone)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    log = tmp_path / "console.log"
    try:
        with log.open("wb") as stdout:
            code = subprocess.run(
                [sys.executable, "-m", "isoplug", "run", str(failing_plugins(tmp_path))],
                stdout=stdout,
                stderr=write_end,
                env=ENV,
                timeout=60,
                check=False,
            ).returncode
    finally:
        os.close(write_end)
    output = log.read_text()
    assert code == 1, output
    assert "all plugins stopped" in output, output
    assert "exit code 1: failed: a, b, c, d" in output, output
    assert "BrokenPipeError" not in output, output
