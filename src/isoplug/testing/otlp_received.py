"""Reading what an OTLP receiver wrote (:mod:`isoplug.testing.otlp`, or a collector's ``file``
exporter): OTLP JSON lines, one request each, back into records and metric points."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from isoplug.errors import WaitTimeout

__all__ = ["LogEntry", "MetricPoint", "Received", "any_value"]


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP JSON ``AnyValue`` as a Python value (ints as ints, bytes as bytes)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return value["boolValue"]
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return [any_value(item) for item in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    return None


def _attributes(values: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: any_value(kv.get("value", {})) for kv in values}


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One log record as received, with its resource and scope."""

    resource: dict[str, Any]
    scope: str
    scope_attributes: dict[str, Any]
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    flags: int
    #: The attributes' keys in the order they came, repeats kept (``attributes`` keeps the
    #: last value of a repeated key, as most backends do; OTLP says keys are unique).
    attribute_keys: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    """One data point of a metric as received: ``value`` for sums and gauges; ``count``,
    ``sum`` and ``bucket_counts`` for histograms."""

    name: str
    unit: str
    resource: dict[str, Any]
    attributes: dict[str, Any]
    value: float | None
    count: int | None = None
    sum: float | None = None
    bucket_counts: tuple[int, ...] = ()


class Received:
    """What a receiver wrote to its output file after its first ``offset`` bytes (it grows).

    Each call reads what was added since the last one: a test polling a file of 100,000
    records with :meth:`until` parsed all of them again at every poll (seconds each). A line
    is taken once it ends (a line being written waits for the next call); a file that shrank
    was written anew (a collector restarted), and is read again from its start.
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        #: The requests of the whole lines read so far, and the byte they end at.
        self._requests: list[dict[str, Any]] = []
        self._read_to = offset
        #: The log entries of the first ``_logs_from`` requests.
        self._logs: list[LogEntry] = []
        self._logs_from = 0

    def _lines(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as output:
                size = os.fstat(output.fileno()).st_size
                if size < self._read_to:
                    self._requests, self._read_to = [], 0
                    self._logs, self._logs_from = [], 0
                output.seek(self._read_to)
                added = output.read()
        except FileNotFoundError:
            return self._requests
        whole = added.rfind(b"\n") + 1
        for line in added[:whole].splitlines():
            if line.strip():
                self._requests.append(json.loads(line))
        self._read_to += whole
        return self._requests

    def logs(self) -> list[LogEntry]:
        requests = self._lines()
        for request in requests[self._logs_from :]:
            self._logs.extend(_log_entries(request))
        self._logs_from = len(requests)
        return list(self._logs)

    def metrics(self) -> list[MetricPoint]:
        points: list[MetricPoint] = []
        for request in self._lines():
            for resource_metrics in request.get("resourceMetrics", []):
                resource = _attributes(resource_metrics.get("resource", {}).get("attributes", []))
                for scope_metrics in resource_metrics.get("scopeMetrics", []):
                    for metric in scope_metrics.get("metrics", []):
                        points.extend(_points(metric, resource))
        return points

    def log_count(self) -> int:
        """Log records received, in every mode (with ``count_only``, the only thing kept)."""
        total = 0
        for request in self._lines():
            if "count" in request:
                total += int(request["count"]["logs"])
            else:
                for resource_logs in request.get("resourceLogs", []):
                    for scope_logs in resource_logs.get("scopeLogs", []):
                        total += len(scope_logs.get("logRecords", []))
        return total

    def latest(self, name: str, **attributes: Any) -> MetricPoint | None:
        """The last point received of metric ``name`` whose attributes include these."""
        found = None
        for point in self.metrics():
            if point.name == name and all(
                point.attributes.get(key.replace("__", ".")) == value
                for key, value in attributes.items()
            ):
                found = point
        return found

    def wait(self, condition: Callable[[Received], Any], timeout: float = 10.0) -> Any:
        """Wait until ``condition(self)`` is true; return it. Raises ``WaitTimeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise WaitTimeout(f"the OTLP receiver did not get what was awaited in {timeout} s")
            time.sleep(0.02)

    async def until(self, condition: Callable[[Received], Any], timeout: float = 10.0) -> Any:
        """:meth:`wait`, on an event loop (which keeps running meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise WaitTimeout(f"the OTLP receiver did not get what was awaited in {timeout} s")
            await asyncio.sleep(0.02)


def _log_entries(request: dict[str, Any]) -> Iterator[LogEntry]:
    for resource_logs in request.get("resourceLogs", []):
        resource = _attributes(resource_logs.get("resource", {}).get("attributes", []))
        for scope_logs in resource_logs.get("scopeLogs", []):
            scope = scope_logs.get("scope", {})
            scope_attributes = _attributes(scope.get("attributes", []))
            for record in scope_logs.get("logRecords", []):
                yield LogEntry(
                    resource=resource,
                    scope=scope.get("name", ""),
                    scope_attributes=scope_attributes,
                    time_unix_nano=int(record.get("timeUnixNano", 0)),
                    observed_time_unix_nano=int(record.get("observedTimeUnixNano", 0)),
                    severity_number=int(record.get("severityNumber", 0)),
                    severity_text=record.get("severityText", ""),
                    body=any_value(record.get("body", {})),
                    attributes=_attributes(record.get("attributes", [])),
                    trace_id=record.get("traceId", ""),
                    span_id=record.get("spanId", ""),
                    flags=int(record.get("flags", 0)),
                    attribute_keys=tuple(kv["key"] for kv in record.get("attributes", [])),
                )


def _points(metric: dict[str, Any], resource: dict[str, Any]) -> Iterator[MetricPoint]:
    name, unit = metric.get("name", ""), metric.get("unit", "")
    for kind in ("sum", "gauge"):
        for point in metric.get(kind, {}).get("dataPoints", []):
            value = point.get("asInt", point.get("asDouble"))
            yield MetricPoint(
                name, unit, resource, _attributes(point.get("attributes", [])),
                float(value) if value is not None else None,
            )  # fmt: skip
    for point in metric.get("histogram", {}).get("dataPoints", []):
        yield MetricPoint(
            name,
            unit,
            resource,
            _attributes(point.get("attributes", [])),
            None,
            count=int(point.get("count", 0)),
            sum=float(point.get("sum", 0.0)),
            bucket_counts=tuple(int(n) for n in point.get("bucketCounts", [])),
        )
