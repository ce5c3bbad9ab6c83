"""Tests for pystol_worker.core.model: durations, target mode/value rules, strictness, statuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from pystol_worker.core.model import (
    HttpProbe,
    JobSpec,
    JobStatus,
    Target,
    TargetMode,
    format_duration,
    parse_duration,
)


def spec(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {"action": "pod-kill", "target": {"namespaces": ["shop"]}}
    data.update(fields)
    return JobSpec.model_validate(data)


def locs(error: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(item["loc"]) for item in error.errors()]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2m500ms", 120.5),
        (" 45s ", 45.0),
        (90, 90.0),
        (1.5, 1.5),
        ("1.5", 1.5),
        ("90", 90.0),
        (0, 0.0),
        ("0s", 0.0),
    ],
)
def test_duration_parses_to_seconds(given: object, seconds: float) -> None:
    assert parse_duration(given) == pytest.approx(seconds)
    assert spec(duration=given).duration == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("given", "shown"),
    [("60s", "1m"), (90, "90s"), ("1h", "1h"), ("1h30m", "90m"), ("250ms", "0.25s"),
     ("1.5", "1.5s"), (45, "45s"), (0, "0s")],
)
def test_duration_serialises_to_a_string_in_json(given: object, shown: str) -> None:
    job = spec(duration=given)
    data = json.loads(job.model_dump_json())
    assert data["duration"] == shown
    # Python-mode dumps keep the number; only JSON turns it into text.
    assert job.model_dump()["duration"] == job.duration


@pytest.mark.parametrize("given", ["60s", "5m", "1h30m", "250ms", 90, "1.5", "2h0m0.25s",
                                   "10m15s"])
def test_duration_survives_a_json_round_trip(given: object) -> None:
    job = spec(duration=given, recovery_timeout=given)
    again = JobSpec.model_validate_json(job.model_dump_json())
    assert again.duration == pytest.approx(job.duration)
    assert again.recovery_timeout == pytest.approx(job.recovery_timeout)
    assert again == job


def test_tiny_duration_survives_a_json_round_trip() -> None:
    job = spec(duration="0.00001")
    again = JobSpec.model_validate_json(job.model_dump_json())
    assert again.duration == pytest.approx(0.00001)


def test_fractional_duration_keeps_its_precision_through_json() -> None:
    job = spec(duration="1234.5678")
    again = JobSpec.model_validate_json(job.model_dump_json())
    assert again.duration == 1234.5678


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("10 parsecs", "invalid duration '10 parsecs'"),
        ("", "invalid duration"),
        ("5 m", "invalid duration"),
        ("m5", "invalid duration"),
        ("1h30", "invalid duration"),
        ("-5s", "invalid duration"),
        ("5d", "invalid duration"),
        (-1, "cannot be negative"),
        ("-1", "cannot be negative"),
        (-0.5, "cannot be negative"),
        (True, "expected a duration such as 60s"),
        (False, "expected a duration such as 60s"),
        ([60], "expected a duration such as 60s"),
    ],
)
def test_bad_duration_is_refused_with_a_clear_message(given: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(duration=given)
    assert locs(caught.value) == [("duration",)]
    assert message in caught.value.errors()[0]["msg"]


def test_the_duration_message_shows_examples_of_good_durations() -> None:
    with pytest.raises(ValueError, match=r"60s, 5m or 1h30m"):
        parse_duration("10 parsecs")


@pytest.mark.parametrize("given", ["inf", "nan", float("inf")])
def test_infinite_or_nan_duration_is_refused(given: object) -> None:
    with pytest.raises(ValidationError):
        spec(duration=given)


def test_format_duration_picks_the_largest_whole_unit() -> None:
    assert format_duration(7200) == "2h"
    assert format_duration(120) == "2m"
    assert format_duration(61) == "61s"
    assert format_duration(0.5) == "0.5s"


def test_http_probe_timeout_is_a_duration() -> None:
    # a top-level `timeout` (records stored before `run` existed) is read as run.timeout
    probe = HttpProbe.model_validate({"url": "http://web.shop/healthz", "timeout": "250ms"})
    assert probe.run.timeout == pytest.approx(0.25)
    assert json.loads(probe.model_dump_json())["run"]["timeout"] == "0.25s"
    assert HttpProbe(url="https://x").run.timeout == 5.0
    with pytest.raises(ValidationError) as caught:
        HttpProbe(url="ftp://web.shop/")
    assert locs(caught.value) == [("url",)]


def test_probes_are_discriminated_by_type() -> None:
    job = spec(probes=[{"type": "http", "url": "http://web/"}])
    assert isinstance(job.probes[0], HttpProbe)
    with pytest.raises(ValidationError):
        spec(probes=[{"type": "tcp", "url": "http://web/"}])


# --------------------------------------------------------------------------- mode and value


@pytest.mark.parametrize("mode", ["one", "all"])
def test_one_and_all_take_no_value(mode: str) -> None:
    assert Target(mode=mode).value is None
    with pytest.raises(ValidationError, match=f"mode {mode} takes no value"):
        Target(mode=mode, value=1)


def test_the_default_mode_is_one() -> None:
    assert Target(namespaces=["shop"]).mode == TargetMode.ONE


@pytest.mark.parametrize("mode", ["fixed", "fixed-percent", "random-max-percent"])
def test_counting_modes_need_a_value(mode: str) -> None:
    with pytest.raises(ValidationError, match=f"mode {mode} needs a value"):
        Target(mode=mode)


@pytest.mark.parametrize("value", [1, 2, 1000, 3.0])
def test_fixed_takes_a_whole_number_of_at_least_one(value: float) -> None:
    assert Target(mode="fixed", value=value).value == value


@pytest.mark.parametrize("value", [0, -1, 0.5, 2.5])
def test_fixed_refuses_fractions_and_numbers_below_one(value: float) -> None:
    with pytest.raises(ValidationError, match="whole number value of at least 1"):
        Target(mode="fixed", value=value)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_fixed_refuses_infinite_and_nan_values_cleanly(value: str) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        Target(mode="fixed", value=value)


@pytest.mark.parametrize("mode", ["fixed-percent", "random-max-percent"])
@pytest.mark.parametrize("value", [0.1, 1, 50, 99.9, 100])
def test_percent_modes_accept_values_in_zero_to_hundred(mode: str, value: float) -> None:
    assert Target(mode=mode, value=value).value == value


@pytest.mark.parametrize("mode", ["fixed-percent", "random-max-percent"])
@pytest.mark.parametrize("value", [0, -5, 100.01, 150, "nan", "inf"])
def test_percent_modes_refuse_values_outside_zero_to_hundred(mode: str, value: object) -> None:
    with pytest.raises(ValidationError, match=r"percent value in \(0, 100\]|finite number"):
        Target(mode=mode, value=value)


def test_unknown_mode_is_refused_at_target_mode() -> None:
    with pytest.raises(ValidationError) as caught:
        spec(target={"namespaces": ["shop"], "mode": "some"})
    assert locs(caught.value) == [("target", "mode")]


# --------------------------------------------------------------------------- amount


def test_amount_means_fixed_with_that_value() -> None:
    target = Target(names=["node-1", "node-2", "node-3"], amount=2)
    assert target.mode == TargetMode.FIXED
    assert target.value == 2
    assert target.amount is None


def test_amount_with_mode_fixed_agrees() -> None:
    target = Target(mode="fixed", amount=3)
    assert (target.mode, target.value) == (TargetMode.FIXED, 3)


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 2, "value": 2},
        {"amount": 2, "mode": "fixed", "value": 2},
        {"amount": 2, "mode": "all"},
        {"amount": 2, "mode": "fixed-percent", "value": 50},
        {"amount": 2, "mode": "random-max-percent", "value": 50},
    ],
)
def test_amount_conflicts_with_mode_and_value(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="either amount or mode/value, not both"):
        Target(**fields)


def test_amount_conflicts_with_an_explicit_mode_one() -> None:
    with pytest.raises(ValidationError, match="either amount or mode/value, not both"):
        Target(mode="one", amount=3)


@pytest.mark.parametrize("amount", [0, -1])
def test_amount_must_be_at_least_one(amount: int) -> None:
    with pytest.raises(ValidationError) as caught:
        Target(amount=amount)
    assert locs(caught.value) == [("amount",)]


# --------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("name", ["shop", "a", "my-shop-2", "0day", "a" * 63])
def test_valid_namespace_names(name: str) -> None:
    assert Target(namespaces=[name]).namespaces == [name]


@pytest.mark.parametrize("name", ["Shop", "-shop", "shop-", "my_shop", "shop.prod", "a" * 64,
                                  "", "shop prod", "shöp"])
def test_invalid_namespace_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="is not a valid namespace name") as caught:
        spec(target={"namespaces": ["ok", name]})
    assert locs(caught.value) == [("target", "namespaces", 1)]


def test_namespace_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError, match="is not a valid namespace name"):
        Target(namespaces=["shop\n"])


# --------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"colour": "red"}, ("colour",)),
        ({"target": {"namespaces": ["shop"], "selector": "app=web"}}, ("target", "selector")),
        ({"probes": [{"type": "http", "url": "http://web/", "expect": 200}]},
         ("probes", 0, "http", "expect")),
    ],
)
def test_unknown_fields_are_refused_with_their_path(data: dict[str, Any],
                                                    loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**data)
    assert locs(caught.value) == [loc]
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_action_and_target_are_required() -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({})
    assert sorted(locs(caught.value)) == [("action",), ("target",)]


def test_spec_defaults() -> None:
    job = spec()
    assert job.params == {}
    assert job.duration is None
    assert job.probes == []
    assert job.dry_run is False
    assert job.idempotency_key is None


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(JobStatus.QUEUED, False), (JobStatus.RUNNING, False), (JobStatus.SUCCEEDED, True),
     (JobStatus.FAILED, True), (JobStatus.ABORTED, True), (JobStatus.CANCELLED, True)],
)
def test_job_status_terminal(status: JobStatus, terminal: bool) -> None:
    assert status.terminal is terminal


def test_job_statuses_are_the_designed_ones() -> None:
    assert {s.value for s in JobStatus} == {"queued", "running", "succeeded", "failed",
                                            "aborted", "cancelled", "skipped"}
