"""Settings given in code (the host's timings, the log replay's limits) refuse a value no
deadline or rate can work with (NaN, an infinity, a negative), naming the setting; and the
host's timings warn of a combination that keeps one of them from ever acting."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from isoplug.host import SupervisorConfig
from isoplug.logs import ReplayLimits
from tests.record_waiter import watching


@pytest.mark.parametrize("name", ["rate", "burst", "report_interval"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_replay_limits_refuse_a_rate_or_interval_that_is_not_a_finite_number(
    name: str, value: float
) -> None:
    settings: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=re.escape(f"ReplayLimits: {name} must be a finite")):
        ReplayLimits(**settings)


def test_replay_limits_keep_none_for_no_rate_limit() -> None:
    assert ReplayLimits(rate=None).rate is None


@pytest.mark.parametrize(
    "name", ["health_interval", "call_timeout", "ready_timeout", "stdio_drain_timeout"]
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_supervisor_config_refuses_a_timing_that_is_not_a_finite_number(
    name: str, value: float
) -> None:
    settings: dict[str, Any] = {name: value}
    expected = f"SupervisorConfig: {name} must be a finite number of seconds, 0 or more, not"
    with pytest.raises(ValueError, match=re.escape(expected)):
        SupervisorConfig(**settings)


@pytest.mark.parametrize("value", [0, 0.001])
def test_supervisor_config_refuses_health_checks_without_a_pause(value: float) -> None:
    """0 would have the host ask each runner in a loop: a core spent while nothing happens."""
    with pytest.raises(ValueError, match=r"health_interval must be at least 0\.01 s, not"):
        SupervisorConfig(health_interval=value)


@pytest.mark.parametrize(("shutdown", "teardown"), [(2.0, 3.0), (3.0, 3.0), (0.5, 60.0)])
def test_supervisor_config_warns_of_a_shutdown_timeout_not_above_the_teardown_timeout(
    shutdown: float, teardown: float
) -> None:
    """The host's SIGTERM would come before the runner's teardown timeout could end (and
    name) what the plugins left running: a stop that needs it ends in a SIGTERM instead. Not
    refused: teardown_timeout also bounds stops the host does not time."""
    with watching("isoplug.host") as waiter:
        config = SupervisorConfig(shutdown_timeout=shutdown, teardown_timeout=teardown)
    assert (config.shutdown_timeout, config.teardown_timeout) == (shutdown, teardown)
    (warning,) = waiter.records
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith(
        f"SupervisorConfig: shutdown_timeout ({shutdown:g} s) is not above teardown_timeout "
        f"({teardown:g} s): the host sends SIGTERM to a runner it stops before the runner's "
        "own teardown timeout ends"
    ), warning.getMessage()


@pytest.mark.parametrize(("shutdown", "teardown"), [(5.0, 3.0), (30.0, 0.5)])
def test_supervisor_config_is_silent_with_room_for_the_teardown(
    shutdown: float, teardown: float
) -> None:
    with watching("isoplug.host") as waiter:
        SupervisorConfig(shutdown_timeout=shutdown, teardown_timeout=teardown)
        SupervisorConfig()
    assert not waiter.records, waiter.messages()
