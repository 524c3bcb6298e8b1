"""An OTLP receiver for tests: OTLP/HTTP (protobuf and JSON) and OTLP/gRPC, on local ports.

Run it as a process (what :class:`OtlpReceiver` does)::

    python -m isoplug.testing.otlp --output received.jsonl [--http-port N] [--grpc-port N]
                                   [--fail-status CODE]

It decodes every request with the official protobuf definitions (``opentelemetry-proto``)
and appends it to ``--output`` as one line of OTLP JSON (``{"resourceLogs": [...]}``,
``resourceMetrics``, ``resourceSpans``; trace and span ids in hex, enums as numbers), the
format of the OpenTelemetry Collector's ``file`` exporter. So the same reading code
(:class:`Received`) serves a real collector: when the environment variable ``OTELCOL_BIN``
names an ``otelcol-contrib`` binary, :class:`OtlpReceiver` runs it instead, with OTLP
receivers on both protocols and the ``file`` exporter. Once ready the process prints one
JSON line with its ports (``{"http": 4318, "grpc": 4317}``). ``--fail-status`` answers every
export with that HTTP status (and the matching gRPC status) instead, for tests of a collector
that refuses.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent import futures
from pathlib import Path
from typing import Any

from isoplug.testing.otlp_received import LogEntry, MetricPoint, Received, any_value

__all__ = ["LogEntry", "MetricPoint", "OtlpReceiver", "Received", "any_value"]

#: Signal -> (request class path, the JSON key of its top-level list).
_SIGNALS = {
    "logs": ("opentelemetry.proto.collector.logs.v1.logs_service_pb2", "ExportLogsServiceRequest"),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        "ExportMetricsServiceRequest",
    ),
    "traces": (
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        "ExportTraceServiceRequest",
    ),
}
#: HTTP status -> the gRPC status a collector answers with (OTLP spec's mapping, inverted).
_GRPC_STATUS = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


# -- the receiving process ------------------------------------------------------------------------


class _Recorder:
    """Decodes requests and appends them to the output file, one JSON line each."""

    def __init__(self, output: Path, fail_status: int | None, count_only: bool = False) -> None:
        import importlib

        self.fail_status = fail_status
        self.count_only = count_only
        self._file = output.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.classes = {
            signal: getattr(importlib.import_module(module), name)
            for signal, (module, name) in _SIGNALS.items()
        }

    def record(self, message: Any) -> None:
        from google.protobuf import json_format

        if self.count_only:
            line = json.dumps({"count": _count(message)})
        else:
            data = json_format.MessageToDict(message, use_integers_for_enums=True)
            line = json.dumps(_ids_to_hex(data), separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _count(message: Any) -> dict[str, int]:
    """How many log records, metric data points and spans a request holds."""
    counts = {"logs": 0, "metrics": 0, "traces": 0}
    for resource in getattr(message, "resource_logs", ()):
        for scope in resource.scope_logs:
            counts["logs"] += len(scope.log_records)
    for resource in getattr(message, "resource_metrics", ()):
        for scope in resource.scope_metrics:
            counts["metrics"] += len(scope.metrics)
    for resource in getattr(message, "resource_spans", ()):
        for scope in resource.scope_spans:
            counts["traces"] += len(scope.spans)
    return counts


def _ids_to_hex(value: Any) -> Any:
    """Protobuf's JSON writes bytes in base64; OTLP JSON writes trace and span ids in hex."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex() if key in _ID_KEYS and isinstance(item, str)
            else _ids_to_hex(item)
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_ids_to_hex(item) for item in value]
    return value


def _ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64encode(bytes.fromhex(item)).decode()
            if key in _ID_KEYS and isinstance(item, str)
            else _ids_to_base64(item)
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_ids_to_base64(item) for item in value]
    return value


def _http_handler(recorder: _Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    from google.protobuf import json_format

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            signal = self.path.rstrip("/").rsplit("/", 1)[-1]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            request_class = recorder.classes.get(signal) if self.path.startswith("/v1/") else None
            if request_class is None:
                return self._answer(404, b"no such OTLP path", "text/plain")
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if recorder.fail_status is not None:
                return self._answer(recorder.fail_status, b"refused by --fail-status", "text/plain")
            is_json = "json" in (self.headers.get("Content-Type") or "")
            try:
                if is_json:
                    message = json_format.ParseDict(
                        _ids_to_base64(json.loads(body)), request_class()
                    )
                else:
                    message = request_class.FromString(body)
            except Exception as exc:
                return self._answer(400, f"cannot decode: {exc}".encode(), "text/plain")
            recorder.record(message)
            if is_json:
                self._answer(200, b"{}", "application/json")
            else:
                self._answer(200, b"", "application/x-protobuf")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request on stderr would drown the test's output

    return Handler


def _grpc_server(recorder: _Recorder, port: int) -> tuple[Any, int]:
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    def servicer(base: type, response: type) -> Any:
        class Servicer(base):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                if recorder.fail_status is not None:
                    code = getattr(
                        grpc.StatusCode, _GRPC_STATUS.get(recorder.fail_status, "INTERNAL")
                    )
                    context.abort(code, "refused by --fail-status")
                recorder.record(request)
                return response()

        return Servicer()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer(
            logs_service_pb2_grpc.LogsServiceServicer, logs_service_pb2.ExportLogsServiceResponse
        ),
        server,
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer(
            metrics_service_pb2_grpc.MetricsServiceServicer,
            metrics_service_pb2.ExportMetricsServiceResponse,
        ),
        server,
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer(
            trace_service_pb2_grpc.TraceServiceServicer,
            trace_service_pb2.ExportTraceServiceResponse,
        ),
        server,
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound:
        raise OSError(f"cannot listen for gRPC on 127.0.0.1:{port}")
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m isoplug.testing.otlp", description=__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="write only how many records each request held (for benchmarks: decoding into "
        "JSON would make this process the bottleneck)",
    )
    arguments = parser.parse_args(argv)
    recorder = _Recorder(arguments.output, arguments.fail_status, arguments.count_only)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", arguments.http_port), _http_handler(recorder)
    )
    httpd.daemon_threads = True
    # shutdown() below waits for serve_forever to look at its flag: every 0.5 s by default,
    # which a test stopping the receiver waited out.
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    grpc_server, grpc_port = _grpc_server(recorder, arguments.grpc_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(json.dumps({"http": httpd.server_address[1], "grpc": grpc_port}), flush=True)
    stop.wait()
    grpc_server.stop(0)
    httpd.shutdown()
    return 0


# -- the process, from a test -------------------------------------------------------------------


class OtlpReceiver:
    """A receiver process on free local ports (``OTELCOL_BIN``: a real collector instead).

    ``http_endpoint`` / ``grpc_endpoint`` are the base URLs to export to; :attr:`received`
    reads what arrived. :meth:`kill` ends it at once (a collector that died); :meth:`start`
    again brings it back on the same ports.
    """

    def __init__(
        self, directory: Path, *, fail_status: int | None = None, count_only: bool = False
    ) -> None:
        self.directory = directory
        self.fail_status = fail_status
        self.count_only = count_only
        self.output = directory / "received.jsonl"
        self.received = Received(self.output)
        self.http_port = 0
        self.grpc_port = 0
        # A collector cannot be told to refuse, nor to only count.
        self.collector = (
            os.environ.get("OTELCOL_BIN") if fail_status is None and not count_only else None
        )
        self._process: subprocess.Popen[str] | None = None

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 20.0) -> OtlpReceiver:
        if self.collector:
            self._start_collector(timeout)
            return self
        command = [sys.executable, "-m", "isoplug.testing.otlp", "--output", str(self.output)]
        command += ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        if self.fail_status is not None:
            command += ["--fail-status", str(self.fail_status)]
        if self.count_only:
            command.append("--count-only")
        process = self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, encoding="utf-8"
        )
        assert process.stdout is not None
        ready = _read_line(process, timeout)
        ports = json.loads(ready)
        self.http_port, self.grpc_port = ports["http"], ports["grpc"]
        return self

    def _start_collector(self, timeout: float) -> None:
        assert self.collector is not None
        self.http_port = self.http_port or _free_port()
        self.grpc_port = self.grpc_port or _free_port()
        config = self.directory / "otelcol.yaml"
        config.write_text(
            "receivers:\n  otlp:\n    protocols:\n"
            f"      grpc:\n        endpoint: 127.0.0.1:{self.grpc_port}\n"
            f"      http:\n        endpoint: 127.0.0.1:{self.http_port}\n"
            "exporters:\n  file:\n"
            f"    path: {self.output}\n    flush_interval: 50ms\n"
            "service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n"
            + "".join(
                f"    {signal}:\n      receivers: [otlp]\n      exporters: [file]\n"
                for signal in ("logs", "metrics", "traces")
            ),
            encoding="utf-8",
        )
        with (self.directory / "otelcol.log").open("ab") as log:
            process = self._process = subprocess.Popen(
                [self.collector, "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                encoding="utf-8",
            )
        deadline = time.monotonic() + timeout
        for port in (self.http_port, self.grpc_port):
            while not _accepts(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.collector} did not start; see {self.directory / 'otelcol.log'}"
                    )
                time.sleep(0.05)

    def kill(self) -> None:
        """End the receiver at once (SIGKILL), as a collector that crashed."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            self._release(process)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._release(process)

    @staticmethod
    def _release(process: subprocess.Popen[str]) -> None:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        process.kill()
        raise RuntimeError("the OTLP receiver did not start")
    return result[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def temporary_receiver(**options: Any) -> OtlpReceiver:
    """A receiver writing under a fresh temporary directory (not started)."""
    return OtlpReceiver(Path(tempfile.mkdtemp(prefix="isoplug-otlp-")), **options)


if __name__ == "__main__":
    sys.exit(main())
