"""`isoplug run --otlp-endpoint` / `--otlp-protocol` / `--metrics-port` as a user runs them
(a real process, stopped with Ctrl-C), and their bad input."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from isoplug.cli import main
from isoplug.cli.signals import REPEAT_WINDOW
from isoplug.testing.otlp import OtlpReceiver
from tests import otel_helpers
from tests.otel_helpers import endpoint_of
from tests.plugins_fixtures import plugins_dir
from tests.processes import child_env
from tests.test_cli import read_until

# One receiver process for the module; each test reads only what arrived during it.
module_otlp_receiver = otel_helpers.module_otlp_receiver
otlp_receiver = otel_helpers.shared_otlp_receiver


async def _start(*arguments: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isoplug",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_env(NO_COLOR="1", **(env or {})),
    )


async def _run_until_ready(
    directory: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Start `isoplug run`, wait for the plugin to be ready, Ctrl-C it; its exit code and
    output."""
    cli = await _start("run", str(directory), *options, env=env)
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_until(cli, r"plugin telemetry: ready", seen)
    except BaseException:
        cli.kill()
        await cli.communicate()
        raise
    cli.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    return cli.returncode, "".join(seen) + rest.decode()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_run_exports_to_the_endpoint(
    tmp_path: Path, otlp_receiver: OtlpReceiver, protocol: str
) -> None:
    directory = plugins_dir(tmp_path, "telemetry")
    options = ["--otlp-endpoint", endpoint_of(otlp_receiver, protocol)]
    if protocol == "grpc":
        options += ["--otlp-protocol", "grpc"]
    code, output = await _run_until_ready(directory, *options)
    assert code == 0, output
    logs = otlp_receiver.received.logs()
    ready = [e for e in logs if e.scope == "isoplug.host" and "ready" in str(e.body)]
    assert ready and ready[0].resource["service.name"] == "isoplug"
    stopped = [e for e in logs if e.scope == "isoplug.host" and "stopped" in str(e.body)]
    assert stopped, "the records of the shutdown were exported before the CLI exited"
    exits = otlp_receiver.received.latest("isoplug.runner.exits", isoplug__exit__kind="stopped")
    assert exits is not None and exits.value == 1


async def test_run_follows_the_standard_environment(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """No option: OTEL_EXPORTER_OTLP_ENDPOINT and _PROTOCOL, OTEL_SERVICE_NAME decide."""
    directory = plugins_dir(tmp_path, "telemetry")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "plugins-prod",
    }
    code, output = await _run_until_ready(directory, env=env)
    assert code == 0, output
    ready = [e for e in otlp_receiver.received.logs() if "ready" in str(e.body)]
    assert ready and ready[0].resource["service.name"] == "plugins-prod"


async def test_run_serves_metrics_for_prometheus(tmp_path: Path) -> None:
    directory = plugins_dir(tmp_path, "telemetry")
    cli = await _start("run", str(directory), "--metrics-port", "127.0.0.1:0")
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_until(cli, r"plugin telemetry: ready", seen)
            await read_until(cli, r"metrics for Prometheus at (http://\S+/metrics)", seen)
            url = next(m for line in seen if (m := re.search(r"(http://\S+/metrics)", line)))[1]
            text = await asyncio.to_thread(_scrape, url)
    finally:
        cli.send_signal(signal.SIGINT)
        await asyncio.wait_for(cli.communicate(), 30)
    assert re.search(r'isoplug_plugin_ready\{[^}]*isoplug_plugin_id="telemetry"[^}]*\} 1\.0', text)
    assert cli.returncode == 0


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (
            ["--otlp-endpoint", "127.0.0.1:4318"],
            {},
            "the OTLP endpoint must be a URL such as http://127.0.0.1:4318, got '127.0.0.1:4318'",
        ),
        (["--otlp-protocol", "grpc"], {}, "--otlp-protocol needs --otlp-endpoint"),
        (
            ["--otlp-endpoint", "http://127.0.0.1:4318"],
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: unknown OTLP protocol 'http/json' (isoplug does not "
            "send http/json); use one of: http/protobuf, grpc",
        ),
        (["--metrics-port", "lots"], {}, "--metrics-port wants [HOST:]PORT, got 'lots'"),
    ],
)
def test_bad_telemetry_options_say_what_is_wrong(
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["run", str(plugins_dir(tmp_path, "telemetry")), *options]) == 2
    assert message in capsys.readouterr().err


def test_a_metrics_port_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", str(plugins_dir(tmp_path, "telemetry")), "--metrics-port", str(port)])
    assert code == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err


@contextlib.contextmanager
def _silent_collector() -> Iterator[str]:
    """The endpoint of a collector that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


async def _read_or_kill(
    cli: asyncio.subprocess.Process, patterns: Sequence[str], seen: list[str]
) -> None:
    """Read the command's output until each of ``patterns`` in turn (30 s in all); kill it if
    one never comes."""
    try:
        async with asyncio.timeout(30):
            for pattern in patterns:
                await read_until(cli, pattern, seen)
    except BaseException:
        cli.kill()
        await cli.communicate()
        raise


async def _signal_again(cli: asyncio.subprocess.Process, signum: int) -> tuple[str, float]:
    """Send ``signum`` once past the window in which it would repeat the first one; the rest
    of the output, and how long the command took to end after it."""
    await asyncio.sleep(REPEAT_WINDOW + 0.1)
    began = time.perf_counter()
    cli.send_signal(signum)
    rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    return rest.decode(), time.perf_counter() - began


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_second_signal_ends_the_wait_for_a_collector_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A collector that never answers: after the plugins stopped, `isoplug run` waits (at most
    EXPORT_SHUTDOWN_TIMEOUT) to send its last records; a second signal ends that wait at once,
    with exit code 130, no traceback, and the report of what was dropped."""
    directory = plugins_dir(tmp_path, "telemetry")
    with _silent_collector() as endpoint:
        cli = await _start("run", str(directory), "--otlp-endpoint", endpoint)
        seen: list[str] = []
        await _read_or_kill(cli, [r"plugin telemetry: ready"], seen)
        cli.send_signal(signum)
        # Said when the wait begins: the operator knows what the command waits for.
        await _read_or_kill(
            cli,
            [
                r"all plugins stopped",
                r"sending the last OpenTelemetry records \(at most 5 s; a signal",
            ],
            seen,
        )
        rest, took = await _signal_again(cli, signum)
    output = "".join(seen) + rest
    assert cli.returncode == 130, output
    assert f"{signum.name}: stopping now, no longer sending the last OpenTelemetry" in output
    assert "the exporter closed before it could send them" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert took < 3.0, took  # at once: not the rest of the 5 s wait


async def test_a_second_signal_while_the_plugins_stop_skips_the_exports_wait(
    tmp_path: Path,
) -> None:
    """The second signal came while a plugin was still stopping (it ignores SIGTERM, blocks in
    teardown): it kills every runner, and the command then ends at once, exit code 130, not
    after the export's last wait for a collector that never answers; one line says the last
    records were not sent."""
    directory = plugins_dir(tmp_path, "telemetry", "stubborn")
    with _silent_collector() as endpoint:
        cli = await _start("run", str(directory), "--otlp-endpoint", endpoint)
        seen: list[str] = []
        await _read_or_kill(cli, [r"plugin stubborn: ready", r"plugin telemetry: ready"], seen)
        cli.send_signal(signal.SIGTERM)
        await _read_or_kill(cli, [r"plugin telemetry: stopped"], seen)
        rest, took = await _signal_again(cli, signal.SIGTERM)
    output = "".join(seen) + rest
    assert cli.returncode == 130, output
    assert "SIGTERM again: killing every runner now" in output
    assert "not sending the last OpenTelemetry records: a second signal ended everything" in output
    assert "sending the last OpenTelemetry records (at most" not in output
    assert "Traceback" not in output
    assert took < 3.0, took  # at once: not the export's 5 s wait
