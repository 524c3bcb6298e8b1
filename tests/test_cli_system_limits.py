"""`isoplug run` where the system or the operator's input leaves it too little: a descriptor
limit too low for the command itself, a `--config` path that never ends, a run where no
plugin ever started. Each is a clear message and a non-zero code, never a traceback, and
leaves nothing in the temporary folder. Real ``isoplug`` subprocesses."""

from __future__ import annotations

import os
import re
import resource
import signal
from collections.abc import Callable
from pathlib import Path

from tests.plugins_fixtures import plugins_dir
from tests.test_cli_exits import ENV, cli, isoplug, write_plugin

#: What the command's own address space is capped at where it reads input that never ends:
#: without a cap of its own, a bug there would take the machine's memory, not fail.
_ADDRESS_SPACE = 1024 * 1024 * 1024


def _limited(resource_id: int, value: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource_id, (value, value))

    return limit


def test_a_config_file_that_never_ends_is_refused_past_its_cap(tmp_path: Path) -> None:
    directory = str(plugins_dir(tmp_path, "echo"))
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024) + b"\n")
    for config in ("/dev/zero", str(big)):
        result = isoplug(
            "run",
            "--config",
            config,
            directory,
            preexec_fn=_limited(resource.RLIMIT_AS, _ADDRESS_SPACE),
        )
        assert result.returncode == 2, (config, result.stderr)
        assert result.stderr == (
            f"isoplug run: --config {config}: holds more than 1.0 MiB (1048576 bytes), the limit "
            "for a configuration file; not read further (is it the file meant? /dev/zero and a "
            "FIFO fed without end never end)\n"
        ), result.stderr


def test_a_descriptor_limit_too_low_for_the_command_is_said_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Too low for its event loop (8), its signals' wake-up pair (12), its listeners (16):
    each time before any plugin could start, wherever it ran out."""
    directory = str(plugins_dir(tmp_path, "echo"))
    for limit in (8, 12, 16):
        temporary = tmp_path / f"tmp-{limit}"
        temporary.mkdir()
        env = dict(ENV, TMPDIR=str(temporary))
        result = isoplug(
            "run", directory, preexec_fn=_limited(resource.RLIMIT_NOFILE, limit), env=env
        )
        assert result.returncode == 71, (limit, result.stdout, result.stderr)
        assert re.fullmatch(
            rf"isoplug run: cannot go on: the host \(ulimit -n {limit}\) is out of file "
            r"descriptors \(Too many open files\): each running plugin takes about 15 of the "
            r"host's, and the host about 25 of its own; raise the limit \(ulimit -n, or "
            r"LimitNOFILE= in a systemd unit\)\n",
            result.stderr,
        ), (limit, result.stderr)
        assert os.listdir(temporary) == [], limit


async def test_a_run_where_no_plugin_ever_started_exits_1_saying_why(tmp_path: Path) -> None:
    """Its plugin crashed at every start (here its setup; a host out of descriptors for its
    runners alike), and waits to restart when stopped: a failure, not a clean run."""
    code = """\
    import isoplug

    class P(isoplug.Plugin):
        async def setup(self, ctx):
            raise RuntimeError("database unreachable")
    """
    write_plugin(tmp_path, "db", code, "[restart]\nbackoff_initial = 60\nbackoff_max = 60\n")
    async with cli("run", str(tmp_path)) as run:
        await run.until(r"plugin db: crashed: .*; restarting in 60 s")
        run.process.send_signal(signal.SIGINT)
        code_, output, errors = await run.finish()
    assert code_ == 1, output + errors
    last = output.splitlines()[-1]
    assert re.search(
        r"exit code 1: no plugin ever started \(1\): db: .*database unreachable", last
    ), last


async def test_a_plugin_that_never_started_while_others_ran_exits_1_naming_it(
    tmp_path: Path,
) -> None:
    """One plugin serves, the other crashed at every start (a limit on tasks that leaves it no
    thread, a setup that fails every time): the run is no clean one either."""
    failing = """\
    import isoplug

    class P(isoplug.Plugin):
        async def setup(self, ctx):
            raise RuntimeError("database unreachable")
    """
    write_plugin(tmp_path, "db", failing, "[restart]\nbackoff_initial = 60\nbackoff_max = 60\n")
    write_plugin(tmp_path, "ok", "import isoplug\n\nclass P(isoplug.Plugin):\n    pass\n")
    async with cli("run", str(tmp_path)) as run:
        await run.until(r"plugin ok: ready")
        await run.until(r"plugin db: crashed: .*; restarting in 60 s")
        run.process.send_signal(signal.SIGINT)
        code_, output, errors = await run.finish()
    assert code_ == 1, output + errors
    last = output.splitlines()[-1]
    assert re.search(r"exit code 1: never started \(1\): db: .*database unreachable", last), last
