"""Evidence that the kernel's out-of-memory killer ended a runner (Linux), for its exit account.

A SIGKILL the host did not send may come from the out-of-memory killer or from anyone with the
right to signal the runner; the account names the out-of-memory killer only with evidence:

- the cgroup's counter: ``oom_kill`` in ``memory.events`` (cgroup v2) or
  ``memory.oom_control`` (v1) of the runner's memory cgroup, read when it started and after
  it died; a rise says the killer struck in that cgroup meanwhile (not which process);
- the kernel log (``/dev/kmsg``), where readable without asking (``dmesg_restrict`` usually
  keeps it from unprivileged users): a "Killed process <pid>" line naming the runner's pid,
  logged after the runner started (the log is opened at the start and read from its end then:
  its timestamps follow a clock that may drift far from any Python can read).

Where neither can be read, the account says the sender is unknown.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re

from isoplug.wire.sanitize import clean_text

__all__ = ["OomWatch"]

#: Kernel log lines longer than this are cut before they are quoted.
_MAX_QUOTE = 300
#: Far more records than a kernel log buffer holds: it bounds the reading.
_MAX_RECORDS = 200_000
_KILLED = re.compile(rb"Killed process (\d+) ")


@dataclasses.dataclass(frozen=True)
class _Counter:
    path: str
    #: The name a user knows the file by.
    name: str
    value: int


class OomWatch:
    """Watches for the out-of-memory killer around one process's life: create it right after
    the spawn; after the exit, ask :meth:`evidence` or :meth:`close` it (it may hold the
    kernel log open)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._counter = _read_counter(_counter_path(pid))
        self._log: int | None = None
        if not _in_initial_pid_namespace():
            return  # the kernel log names processes by pids this namespace does not use
        try:
            self._log = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._log, 0, os.SEEK_END)
        except OSError:
            self.close()

    def close(self) -> None:
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def evidence(self) -> tuple[str | None, tuple[str, ...]]:
        """What shows the killer ended the process (None: nothing does), and which sources
        could be read (empty: none). Closes the watch."""
        checked: list[str] = []
        found: list[str] = []
        log = None
        if self._log is not None:
            try:
                log = _kernel_log_line(self._log, self.pid)
            finally:
                self.close()
        if log is not None:
            checked.append("the kernel log")
            if log:
                found.append(f"the kernel log: {log!r}")
        before = self._counter
        if before is not None:
            after = _read_counter(before.path)
            if after is not None:
                checked.append(f"{before.name} of its cgroup")
                if after.value > before.value:
                    found.append(
                        f"{before.name} of its cgroup: oom_kill {before.value} -> {after.value}"
                    )
        return ("; ".join(found) if found else None), tuple(checked)


def _in_initial_pid_namespace() -> bool:
    try:
        # The initial pid namespace's inode number is fixed (PROC_PID_INIT_INO).
        return os.readlink("/proc/self/ns/pid") == "pid:[4026531836]"
    except OSError:
        return False


def _counter_path(pid: int) -> str | None:
    """The file holding the ``oom_kill`` counter of ``pid``'s memory cgroup, if any."""
    try:
        # Paths, in the file system's bytes: read as os.fsdecode reads a path, so that what
        # is made of them names the same files.
        with open(f"/proc/{pid}/cgroup", "rb") as cgroups:
            lines = os.fsdecode(cgroups.read()).splitlines()
        with open("/proc/self/mountinfo", "rb") as mountinfo:
            mounts = os.fsdecode(mountinfo.read()).splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2]
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    for mount in mounts:
        fields = mount.split(" ")
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        root, point, fstype = fields[3], fields[4], fields[dash + 1]
        options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        if fstype == "cgroup" and "memory" in options and v1 is not None:
            candidate = _under(point, root, v1, "memory.oom_control")
        elif fstype == "cgroup2" and v2 is not None:
            candidate = _under(point, root, v2, "memory.events")
        else:
            continue
        if candidate is not None and os.path.isfile(candidate):
            return candidate
    return None


def _under(point: str, root: str, path: str, name: str) -> str | None:
    if root != "/":
        if not (path == root or path.startswith(root + "/")):
            return None
        path = path[len(root) :]
    return os.path.join(point, path.lstrip("/"), name)


def _read_counter(path: str | None) -> _Counter | None:
    if path is None:
        return None
    try:
        with open(path, encoding="ascii") as counters:
            for line in counters:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return _Counter(path, os.path.basename(path), int(value))
    except (OSError, ValueError):
        return None
    return None


def _kernel_log_line(fd: int, pid: int) -> str | None:
    """The "Killed process <pid>" line among the kernel log's records from ``fd``'s position
    on; ``""`` when they hold none; None when the log cannot be read."""
    found = ""
    for _ in range(_MAX_RECORDS):
        try:
            record = os.read(fd, 8192)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                continue  # overwritten before we read it: the next one follows
            if exc.errno == errno.EAGAIN:
                break
            return None
        if not record:
            break
        # "<prio>,<seq>,<microseconds>,<flags>;<text>\n"
        text = record.partition(b";")[2]
        match = _KILLED.search(text)
        if match is not None and int(match.group(1)) == pid:
            line = text.split(b"\n", 1)[0].decode("utf-8", "replace")
            # The line names the process as it named itself (its comm): outside text.
            found = clean_text(line, _MAX_QUOTE)
    return found
