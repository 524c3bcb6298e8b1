"""Admission of incoming requests, sans-IO: which run, which wait, which are refused
(isoplug.rpc.admission); and a plugin's event backlog (isoplug.runner.events)."""

from __future__ import annotations

import msgspec
import pytest

from isoplug.control import EventDelivery
from isoplug.rpc.admission import BUSY_CODE, NOT_STARTED_TYPE, Admission, AdmissionLimits
from isoplug.runner.events import EventBacklog
from isoplug.wire import Request


def request(request_id: int, size: int = 1) -> Request:
    return Request(id=request_id, method="call", params=msgspec.Raw(b"\xc0" * size))


def test_requests_wait_in_order_of_arrival_and_past_the_queue_are_refused() -> None:
    admission = Admission(AdmissionLimits(max_running=2, max_queued=2))
    assert admission.offer(request(1), running=2) is None
    assert admission.offer(request(2), running=2) is None
    refused = admission.offer(request(3), running=2)
    assert refused is not None and refused.code == BUSY_CODE
    assert refused.message.startswith("too many requests in flight: 2 running (max_running 2)")
    assert "past max_queued 2 a request is refused" in refused.message
    assert admission.refused == 1
    assert [admission.take(), admission.take(), admission.take()] == [request(1), request(2), None]
    assert admission.queued_bytes == 0


def test_the_queue_is_bounded_in_bytes_too_but_one_request_always_fits() -> None:
    admission = Admission(AdmissionLimits(max_running=1, max_queued=10, max_queued_bytes=100))
    assert admission.offer(request(1, size=500), running=1) is None  # alone: it fits
    refused = admission.offer(request(2, size=1), running=1)
    assert refused is not None and "max_queued_bytes 100" in refused.message
    assert admission.take() == request(1, size=500)
    assert admission.offer(request(3, size=60), running=1) is None
    assert admission.offer(request(4, size=40), running=1) is None
    assert admission.queued_bytes == 100


def test_a_cancel_takes_a_queued_request_out_and_says_what_was_ahead_of_it() -> None:
    admission = Admission(AdmissionLimits(max_running=3))
    for request_id in (1, 2, 3):
        assert admission.offer(request(request_id), running=3) is None
    answer = admission.withdraw(3, running=3)
    assert answer is not None
    assert (answer.code, answer.type) == ("cancelled", NOT_STARTED_TYPE)
    assert answer.message == "5 requests ahead of it: 3 running, 2 queued before it"
    assert admission.withdraw(3, running=3) is None  # gone: a second cancel finds nothing
    assert admission.withdraw(99, running=3) is None  # never queued (running, or answered)
    assert [admission.take(), admission.take()] == [request(1), request(2)]


def test_a_queued_request_starts_only_when_its_params_fit_beside_the_running_ones() -> None:
    admission = Admission(AdmissionLimits(max_running=10, max_running_bytes=100))
    assert admission.offer(request(1, size=60), running=1) is None
    assert admission.take(running_bytes=50) is None  # 50 + 60 > 100: it waits
    assert admission.take(running_bytes=40) == request(1, size=60)
    assert admission.offer(request(2, size=500), running=1) is None
    assert admission.take(running_bytes=0) == request(2, size=500)  # alone: it runs


def test_closing_answers_every_queued_request_and_every_later_one() -> None:
    admission = Admission(AdmissionLimits(max_running=1))
    admission.offer(request(1), running=1)
    admission.offer(request(2), running=1)
    answers = admission.close("shutting down")
    assert [request_id for request_id, _ in answers] == [1, 2]
    assert all(info.type == NOT_STARTED_TYPE for _, info in answers)
    later = admission.offer(request(3), running=0)
    assert later is not None and later.message == "shutting down"
    assert admission.take() is None and len(admission) == 0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_running"):
        AdmissionLimits(max_running=0)
    with pytest.raises(ValueError, match="must not be negative"):
        AdmissionLimits(max_queued=-1)
    with pytest.raises(ValueError, match="must not be negative"):
        AdmissionLimits(max_running_bytes=-1)


def test_an_event_backlog_keeps_its_bound_and_counts_what_it_drops() -> None:
    backlog = EventBacklog(limit=2)
    events = [EventDelivery("tick", n) for n in range(4)]
    assert [backlog.offer(e) for e in events] == ["", "", "max_queued_events", "max_queued_events"]
    assert backlog.dropped == 2
    assert backlog.take() == events[0]
    assert backlog.offer(events[3]) == ""
    assert [backlog.take(), backlog.take(), backlog.take()] == [events[1], events[3], None]


def test_an_event_backlog_keeps_its_byte_bound_but_always_takes_one_event() -> None:
    """Past ``byte_limit`` bytes waiting an event is dropped; an empty backlog takes one
    whatever its size (a bound below the largest event does not drop them all)."""
    backlog = EventBacklog(limit=100, byte_limit=1000)
    assert backlog.offer(EventDelivery("big", 0), 5000) == ""
    assert backlog.offer(EventDelivery("small", 1), 10) == "max_queued_event_bytes"
    assert backlog.take() == EventDelivery("big", 0)
    assert [backlog.offer(EventDelivery("tick", n), 400) for n in range(3)] == [
        "",
        "",
        "max_queued_event_bytes",
    ]
    assert (backlog.bytes, backlog.dropped) == (800, 2)
    assert backlog.drop_waiting() == 2
    assert (backlog.bytes, backlog.dropped) == (0, 4)
