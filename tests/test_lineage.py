"""Which runner a process belongs to (``isoplug.host.lineage``), over real processes: two
stand-ins for runners, each leading a process group of its own in this process's session (as
the host starts runners), start children and double-forked orphans that join a group; this
process stands for the host."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from isoplug.host.descendants import TAG_VARIABLE, read_stat
from isoplug.host.lineage import Evidence, Lineage, TreeMarks, lineage_of

#: A runner's stand-in: on each line of its stdin (``join <group>`` or ``orphan <group>``) it
#: starts a child, or a double-forked orphan (its parent exits at once), that joins process
#: group ``<group>`` (0: stays in the stand-in's) and then writes its pid on stdout. They all
#: live until the pipe whose descriptor is its argument closes.
STAND_IN = """
import os, sys, time

def settle(group, pid):
    if group:
        os.setpgid(0, group)
    os.write(1, b"%d\\n" % pid)
    os.read(int(sys.argv[1]), 1)
    os._exit(0)

for line in sys.stdin:
    part, group = line.split()
    group = int(group)
    if part == "join":
        if os.fork() == 0:
            settle(group, os.getpid())
        continue
    middle = os.fork()
    if middle == 0:
        middle = os.getpid()  # fork() gave this process 0: its own pid is what its child sees
        if os.fork() == 0:
            while os.getppid() == middle:
                time.sleep(0.005)
            settle(group, os.getpid())
        os._exit(0)
    os.waitpid(middle, 0)
"""


class StandIn:
    """A runner's stand-in (see :data:`STAND_IN`), tagged ``tag``."""

    def __init__(self, tag: str, lifeline: int) -> None:
        self.tag = tag
        self.process = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, str(lifeline)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, TAG_VARIABLE: tag},
            pass_fds=(lifeline,),
            process_group=0,
        )
        self.pid = self.process.pid

    def start(self, part: str, group: int = 0) -> int:
        """Start a child (``join``) or an orphan (``orphan``) in ``group``; its pid once it is
        there."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{part} {group}\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())


@contextlib.contextmanager
def stand_ins() -> Iterator[tuple[StandIn, StandIn]]:
    read_end, write_end = os.pipe()
    a, b = StandIn("a" * 16, read_end), StandIn("b" * 16, read_end)
    os.close(read_end)
    try:
        yield a, b
    finally:
        os.close(write_end)  # every child and orphan ends
        for stand_in in (a, b):
            stand_in.process.communicate("")


def started(pid: int) -> dict[int, int]:
    stat = read_stat(pid)
    assert stat is not None
    return {pid: stat.start}


def test_the_parents_decide_before_the_process_group() -> None:
    """A process whose parents lead to runner ``b`` is ``b``'s in ``a``'s group; an orphan in
    ``a``'s group is ``a``'s unless ``b``'s record places it in ``b``'s tree, or it carries a
    tag other than ``a``'s (then it is nobody's); a child of the host's in ``a``'s group is
    nobody's."""
    with stand_ins() as (a, b):
        runners = {a.pid: "a", b.pid: "b"}
        joined = b.start("join", a.pid)
        own_orphan = a.start("orphan")
        stray_orphan = b.start("orphan", a.pid)
        with subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            process_group=a.pid,
        ) as hosts_child:
            assert lineage_of(hosts_child.pid, runners) is None
            hosts_child.communicate(b"")

        assert lineage_of(joined, runners) == Lineage("b", Evidence.PARENTS)
        untagged = {"a": TreeMarks(None, {}), "b": TreeMarks(None, {})}
        for orphan in (own_orphan, stray_orphan):
            # Nothing but the group: the orphan a plugin of b's could be (docs/security.md).
            assert lineage_of(orphan, runners, lambda: untagged) == Lineage("a", Evidence.GROUP)

        seen_by_b = {"a": TreeMarks(None, {}), "b": TreeMarks(None, started(stray_orphan))}
        assert lineage_of(stray_orphan, runners, lambda: seen_by_b) == Lineage("b", Evidence.RECORD)
        tagged = {"a": TreeMarks(a.tag, {}), "b": TreeMarks(b.tag, {})}
        # Another runner's tag rules the orphan out: counted for neither.
        assert lineage_of(stray_orphan, runners, lambda: tagged) is None
        assert lineage_of(own_orphan, runners, lambda: tagged) == Lineage("a", Evidence.GROUP)
        # A tag is no secret: an orphan in its own runner's group carrying a copy of another
        # runner's tag (here: a's tag is what b's orphans carry) counts for nobody, never for
        # the runner it names.
        copied = {"a": TreeMarks(b.tag, {}), "b": TreeMarks(None, {})}
        b_orphan = b.start("orphan")
        assert lineage_of(b_orphan, runners, lambda: copied) is None
        seen_by_a = {"a": TreeMarks(a.tag, started(own_orphan)), "b": TreeMarks(b.tag, {})}
        found = lineage_of(own_orphan, runners, lambda: seen_by_a)
        assert found == Lineage("a", Evidence.RECORD) and not found.by_group


#: This process's part, run as a child subreaper (as an application may make its host): the
#: orphans of the stand-ins' trees become its children, and still count by their group.
AS_SUBREAPER = """
import ctypes, os
from isoplug.host.lineage import Evidence, Lineage, lineage_of
from tests.test_lineage import stand_ins

assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
with stand_ins() as (a, b):
    runners = {a.pid: "a", b.pid: "b"}
    orphan = a.start("orphan")
    with open(f"/proc/{orphan}/stat") as stat:
        assert int(stat.read().rpartition(")")[2].split()[1]) == os.getpid()
    assert lineage_of(orphan, runners) == Lineage("a", Evidence.GROUP)
    assert lineage_of(b.start("join", a.pid), runners) == Lineage("b", Evidence.PARENTS)
print("ok")
"""


def test_a_host_that_adopts_orphans_still_counts_them_by_their_group() -> None:
    """A host made a child subreaper adopts the orphans of its runners' trees: the line of
    parents from one then reaches the host, and is still cut there."""
    done = subprocess.run(
        [sys.executable, "-c", AS_SUBREAPER],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    )
    assert done.stdout == "ok\n", done.stderr
