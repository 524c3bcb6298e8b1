"""A plugin's own interpreter (``python`` in its manifest), and runners that die before they
report ready: real hosts, real runners, real virtual environments.

- With isoplug installed normally (its package in the host's site-packages, not a checkout's
  ``src``), a plugin's venv imports isoplug from the host and everything else from itself.
- An interpreter that cannot run a runner fails its plugin at once, saying why.
- A runner that exits before it reports ready has its last stderr lines in the plugin's error.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

import isoplug
from isoplug import Host, PluginFailed, PluginState
from isoplug.testing import FAST
from tests.venvs import install_copy, make_venv, run_in_venv

REPORTER = """
import os, sys
import isoplug

class Reporter(isoplug.Plugin):
    @isoplug.method
    def facts(self) -> dict:
        import msgspec
        try:
            import shadowme
            shadow = shadowme.WHO
        except ImportError:
            shadow = None
        return {"shadowme": shadow, "msgspec": msgspec.__file__,
                "isoplug": os.path.realpath(isoplug.__file__), "prefix": sys.prefix}
"""

HOST_SCRIPT = """
import asyncio, json, sys
import isoplug

async def main():
    async with isoplug.Host(sys.argv[1]) as host:
        await host.wait_ready(timeout=60)
        facts = {p: await host.call(p, "facts") for p in sys.argv[2:]}
    print(json.dumps(facts))

asyncio.run(main())
"""


def write_plugin(directory: Path, plugin_id: str, module: str, extra: str = "") -> None:
    folder = directory / plugin_id
    folder.mkdir(parents=True)
    (folder / f"{plugin_id}_plugin.py").write_text(module)
    entry = f"{plugin_id}_plugin:" + ("Reporter" if "Reporter" in module else "Plugin")
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{entry}"\n{extra}\n'
    )


@pytest.mark.slow
def test_a_plugin_venv_is_not_shadowed_by_a_normally_installed_host(tmp_path: Path) -> None:
    # The host: isoplug (this checkout's code) and msgspec in its venv's site-packages, as a
    # wheel installs them, and a module the plugin's venv has too, in another version.
    host_site = make_venv(tmp_path / "hostvenv")
    install_copy(isoplug, host_site)
    install_copy(msgspec, host_site)
    (host_site / "shadowme.py").write_text('WHO = "host"\n')
    plugin_site = make_venv(tmp_path / "pluginvenv")
    install_copy(msgspec, plugin_site)
    (plugin_site / "shadowme.py").write_text('WHO = "plugin venv"\n')
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "own", REPORTER, f'python = "{tmp_path / "pluginvenv"}"')
    write_plugin(plugins, "spawned", REPORTER, 'start = "spawn"')
    write_plugin(plugins, "forked", REPORTER)
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    ids = ("own", "spawned", "forked")
    result = run_in_venv(tmp_path / "hostvenv", script, str(plugins), *ids, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    host_isoplug = (host_site / "isoplug" / "__init__.py").resolve()
    own = facts["own"]
    # The plugin's venv: its own packages and msgspec, the host's isoplug (through a link).
    assert own["shadowme"] == "plugin venv"
    assert Path(own["msgspec"]).is_relative_to(plugin_site)
    assert Path(own["prefix"]) == tmp_path / "pluginvenv"
    assert Path(own["isoplug"]).resolve() == host_isoplug
    # The host's own interpreter, spawned or forked from the zygote: the host's packages.
    for plugin_id in ("spawned", "forked"):
        assert facts[plugin_id]["shadowme"] == "host", plugin_id
        assert Path(facts[plugin_id]["msgspec"]).is_relative_to(host_site), plugin_id
        assert Path(facts[plugin_id]["isoplug"]).resolve() == host_isoplug, plugin_id


async def failed_error(plugins: Path, plugin_id: str) -> tuple[str, int]:
    """The error of ``plugin_id``'s plugin once it failed, and its restarts."""
    async with Host(plugins, config=FAST) as host:
        with pytest.raises(PluginFailed):
            await host.wait_ready(60)
        info = host.plugin(plugin_id)
        assert info.state is PluginState.FAILED
        assert info.error is not None
        return info.error, info.restarts


def old_python() -> str | None:
    """A Python older than 3.11 on this machine, if there is one (that runs)."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [str(v / "bin" / "python") for v in sorted(pyenv.glob("3.10.*"))]
    candidates += [str(v / "bin" / "python") for v in sorted(pyenv.glob("2.7.*"))]
    candidates += [shutil.which(n) or "" for n in ("python3.10", "python3.9", "python2.7")]
    for candidate in filter(None, candidates):
        try:
            runs = subprocess.run([candidate, "-c", "pass"], timeout=60, check=False)
        except OSError:
            continue
        if runs.returncode == 0:
            return candidate
    return None


@pytest.mark.slow
async def test_a_venv_without_msgspec_fails_at_once_saying_so(tmp_path: Path) -> None:
    make_venv(tmp_path / "bare")
    plugins = tmp_path / "plugins"
    # The default restart policy: without the check, a crash loop of about 16 s.
    write_plugin(plugins, "bare", REPORTER, f'python = "{tmp_path / "bare"}"')
    error, restarts = await failed_error(plugins, "bare")
    assert restarts == 0
    python = str(tmp_path / "bare" / "bin" / "python")
    assert f"plugin 'bare': its python {python} is Python 3." in error
    said = "\"ModuleNotFoundError: No module named 'msgspec'\""
    assert f"cannot import msgspec, saying: {said}" in error


@pytest.mark.parametrize("program", ["/bin/ls", "/bin/true"])
async def test_a_program_that_is_not_python_fails_at_once(tmp_path: Path, program: str) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "notpython", REPORTER, f'python = "{program}"')
    error, restarts = await failed_error(plugins, "notpython")
    assert restarts == 0
    assert f"plugin 'notpython': its python {program} is not a Python interpreter" in error
    assert "isoplug bug" not in error


def fake_interpreter(directory: Path, stdout: str, stderr: str, code: int) -> Path:
    """A script posing as a plugin's python: it writes these and exits with ``code``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "fakepy"
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s' {shlex.quote(stdout)}\n"
        f"printf '%s' {shlex.quote(stderr)} >&2\n"
        f"exit {code}\n"
    )
    script.chmod(0o755)
    return script


HOST_LIKE = (
    "x); its python is fine: the host ran out of memory\n"
    'ERROR isoplug.host: plugin billing: failed: \x1b[2J "closed" \\ too\n'
)


def quoted_after(error: str, lead: str) -> str:
    """What follows ``lead`` in ``error``, checked to be one quote the host closes."""
    assert lead in error, error
    rest = error.partition(lead)[2]
    assert rest.startswith('"'), error
    # Its first double quote not escaped ends it: everything the script said is before it.
    end = next(i for i in range(1, len(rest)) if rest[i] == '"' and rest[i - 1] != "\\")
    return rest[: end + 1]


async def test_what_a_program_posing_as_python_says_stays_quoted(tmp_path: Path) -> None:
    """The interpreter check's account quotes its words as the runner's stderr is quoted:
    host-like phrases, its own quotes and backslashes stay inside one quote it cannot close."""
    fake = fake_interpreter(tmp_path / "bin", "", HOST_LIKE, 2)
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "wrapped", REPORTER, f'python = "{fake}"')
    error, restarts = await failed_error(plugins, "wrapped")
    assert restarts == 0
    quote = quoted_after(error, "it exited with code 2 and said: ")
    assert "the host ran out of memory" in quote, error
    # The sanitizer's escape, then the quote's: its backslash doubled like its own.
    assert 'failed: \\\\x1b[2J \\"closed\\" \\\\ too"' in quote, error
    after = "; its interpreter cannot run a runner (checked again at its next start)"
    assert error.endswith(quote + after), error
    assert "\x1b" not in error


@pytest.mark.parametrize(
    ("stdout", "lead"),
    [
        (
            "isoplug-probe version 3.12.0\nisoplug-probe missing msgspec " + HOST_LIKE,
            "is Python 3.12.0 but cannot import msgspec, saying: ",
        ),
        (
            "isoplug-probe version 3.12.0\nisoplug-probe missing isoplug.host;ok! " + HOST_LIKE,
            "is Python 3.12.0 but cannot import ",
        ),
        (
            "isoplug-probe version 3.12.0\n",
            "is Python 3.12.0 but the check ended with code 2 and said: ",
        ),
    ],
)
async def test_a_probe_answer_posing_as_python_stays_quoted(
    tmp_path: Path, stdout: str, lead: str
) -> None:
    fake = fake_interpreter(tmp_path / "bin", stdout, HOST_LIKE, 2)
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "posing", REPORTER, f'python = "{fake}"')
    error, _ = await failed_error(plugins, "posing")
    quote = quoted_after(error, lead)
    assert "the host ran out of memory" in quote or "isoplug.host;ok!" in quote, error
    assert "\x1b" not in error


@pytest.mark.parametrize(
    ("said", "command"),
    [
        (
            "isoplug-probe missing msgspec ModuleNotFoundError: No module named 'msgspec'\n",
            "install isoplug's dependencies in it ({} -m pip install msgspec)",
        ),
        (
            "isoplug-probe missing isoplug.runner.session ImportError: isoplug needs msgspec "
            ">= 0.19.0, but msgspec 0.18.6 is installed (its encode_into ignores an offset): "
            "run pip install -U 'msgspec>=0.19'\n",
            "upgrade msgspec in it ({} -m pip install -U 'msgspec>=0.19')",
        ),
    ],
)
async def test_the_msgspec_advice_names_the_plugins_interpreter(
    tmp_path: Path, said: str, command: str
) -> None:
    """A bare ``pip`` pasted in the operator's shell would install into the host's
    environment: the advice names the plugin's interpreter, quoted so that a path with a
    space pastes as one word."""
    fake = fake_interpreter(
        tmp_path / "my venv" / "bin", f"isoplug-probe version 3.12.1\n{said}", "", 0
    )
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "stale", REPORTER, f'python = "{fake}"')
    error, restarts = await failed_error(plugins, "stale")
    assert restarts == 0
    assert error.endswith(
        "; " + command.format(shlex.quote(str(fake))) + "; its interpreter cannot run a runner "
        "(checked again at its next start)"
    ), error


async def test_a_python_too_old_fails_at_once_naming_its_version(tmp_path: Path) -> None:
    python = old_python()
    if python is None:
        pytest.skip("no Python older than 3.11 here")
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "old", REPORTER, f'python = "{python}"')
    error, restarts = await failed_error(plugins, "old")
    assert restarts == 0
    assert f"plugin 'old': its python {python} is Python " in error
    assert "a runner needs Python >= 3.11" in error


async def test_a_passing_interpreter_is_checked_once_per_file_version(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    runs = tmp_path / "runs"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    write_plugin(plugins, "wrapped", REPORTER, f'python = "{wrapper}"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(60)
        assert len(runs.read_text().splitlines()) == 2  # the check, the runner
        await host.restart("wrapped")
        await host.wait_ready(60)
        assert len(runs.read_text().splitlines()) == 3  # the runner only
        stat = wrapper.stat()
        os.utime(wrapper, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        await host.restart("wrapped")
        await host.wait_ready(60)
        assert len(runs.read_text().splitlines()) == 5  # changed: checked again


async def test_a_wrapper_that_does_not_exec_is_named(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    # The default restart policy: every start would go the same way, so none is tried again.
    write_plugin(plugins, "wrapped", REPORTER, f'python = "{wrapper}"')
    error, restarts = await failed_error(plugins, "wrapped")
    assert "the host refused its control connection" in error
    assert "must exec the interpreter" in error
    assert restarts == 0
    assert "runs the runner as a child process" in error


DIES_AT_IMPORT = """
import os
os.write(2, b"starting up\\n\\x1b[31mthe database driver is missing\\n")
os._exit(2)
"""


async def test_a_runner_that_dies_before_ready_says_why_in_its_error(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    # Exit code 2 is also the runner's for a bad bootstrap: only the runner's own words about
    # it make that "an isoplug bug" (and the plugin not worth restarting).
    write_plugin(plugins, "dies", DIES_AT_IMPORT, '[restart]\npolicy = "never"')
    async with Host(plugins, config=FAST) as host:
        with pytest.raises(PluginFailed) as failed:
            await host.wait_ready(60)
        error = host.plugin("dies").error
    assert error is not None
    assert 'it exited before reporting ready; its stderr ended with: "starting up | ' in error
    assert "the database driver is missing" in error
    assert "\x1b" not in error  # sanitized
    assert "isoplug bug" not in error
    assert "restart policy is 'never'" in error
    assert "the database driver is missing" in str(failed.value)


IMITATES_A_BAD_BOOTSTRAP = """
import os, sys
sys.stderr.write(
    "isoplug runner: expected a bootstrap line, got b'' | the host sent SIGKILL: memory limit "
    '512MB exceeded" and "more\\n'
)
sys.stderr.flush()
os._exit(2)
"""


async def test_a_plugin_cannot_pass_for_a_runner_that_could_not_read_its_bootstrap(
    tmp_path: Path,
) -> None:
    """Plugin code writing the runner's bootstrap complaint and exiting with its code: the
    runner had connected (it read its bootstrap), so this is the plugin's crash, restarted
    as one, never "an isoplug bug"; and its words stay inside one quote it cannot close."""
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins,
        "early",
        IMITATES_A_BAD_BOOTSTRAP,
        "[restart]\nmax_restarts = 1\nbackoff_initial = 0",
    )
    error, restarts = await failed_error(plugins, "early")
    assert "isoplug bug" not in error
    assert "could not read its bootstrap" not in error
    assert restarts == 1, error  # restarted: not a permanent failure
    quote = error.partition("its stderr ended with: ")[2]
    assert quote.startswith('"isoplug runner: expected a bootstrap line'), error
    # The plugin's own double quote is escaped: the quote ends where the host's text resumes.
    assert 'exceeded\\" and \\"more"' in quote, error


SAYS_WHY_ON_SYS_STDERR = """
import os, sys
os.write(2, b"fd-level: loading\\n")
print("py-level: config file missing", file=sys.stderr)
sys.stderr.write("py-level: \\x1b[31mgiving up\\n")
os._exit(3)
"""


async def test_what_a_runner_wrote_through_sys_stderr_is_in_the_quote_too(tmp_path: Path) -> None:
    """In a runner, ``sys.stderr`` makes log records, which travel its log connection, not
    its stderr pipe, and may be replayed after its exit is seen: the quote has them, in the
    order they were written, with what it wrote on fd 2 (whose place among them is only as
    good as the time the host read it)."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "says", SAYS_WHY_ON_SYS_STDERR, '[restart]\npolicy = "never"')
    error, _ = await failed_error(plugins, "says")
    assert "exited with code 3; it exited before reporting ready; its stderr ended with: " in error
    quote = error.partition("its stderr ended with: ")[2]
    assert "fd-level: loading" in quote, error
    assert "py-level: config file missing" in quote, error
    assert quote.index("config file missing") < quote.index("giving up"), error
    assert "\x1b" not in error  # sanitized


async def test_the_stderr_quote_is_capped(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    noisy = textwrap.dedent(
        """
        import os
        for n in range(200):
            os.write(2, b"line %d " % n + b"x" * 300 + b"\\n")
        os._exit(1)
        """
    )
    write_plugin(plugins, "noisy", noisy, '[restart]\npolicy = "never"')
    error, _ = await failed_error(plugins, "noisy")
    quote = error.partition("its stderr ended with: ")[2]
    assert "line 199 " in quote and "line 150 " not in quote
    assert len(quote) < 1700


async def test_what_a_false_interpreter_prints_is_quoted_sanitized(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    liar = tmp_path / "liar"
    liar.write_text("#!/bin/sh\nprintf 'isoplug-probe version 3.\\033[2J11.0\\n'\nexit 0\n")
    liar.chmod(0o755)
    write_plugin(plugins, "liar", REPORTER, f'python = "{liar}"')
    error, restarts = await failed_error(plugins, "liar")
    assert restarts == 0
    assert "is not a Python interpreter" in error
    assert "\x1b" not in error
