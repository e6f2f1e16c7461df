"""Rate-limit configuration and the GCRA reference arithmetic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.limits import KeyLimits, LimitsConfig, gcra


def test_per_key_limits_override_the_default() -> None:
    cfg = LimitsConfig.model_validate(
        {
            "default": {"requests_per_s": 5, "burst": 10},
            "per_key": {"batch": {"requests_per_s": 50, "burst": 100, "tokens_per_minute": 100_000}},
        }
    )
    assert cfg.for_key("anyone") == KeyLimits(requests_per_s=5, burst=10)
    batch = cfg.for_key("batch")
    assert batch is not None and batch.tokens_per_minute == 100_000
    assert batch.token_interval_s == pytest.approx(60 / 100_000)


def test_no_default_means_unlimited() -> None:
    assert LimitsConfig().for_key("anyone") is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"requests_per_s": 0, "burst": 1}, "requests_per_s"),
        ({"requests_per_s": 1, "burst": 0}, "burst"),
        ({"requests_per_s": 1, "burst": 1, "tokens_per_minute": 0}, "tokens_per_minute"),
        ({"requests_per_s": 1, "burst": 1, "rpm": 3}, "rpm"),
        ({"burst": 1}, "requests_per_s"),
    ],
)
def test_invalid_limits_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        KeyLimits.model_validate(raw)


def test_limits_are_frozen() -> None:
    limits = KeyLimits(requests_per_s=1, burst=1)
    with pytest.raises(ValidationError):
        limits.burst = 2  # type: ignore[misc]


def test_gcra_take_and_check() -> None:
    step = gcra.take(0.0, 10.0, interval=1.0, capacity=3)
    assert (step.allowed, step.tat, step.remaining) == (True, 11.0, 2)
    step = gcra.take(13.0, 10.0, interval=1.0, capacity=3)
    assert (step.allowed, step.tat, step.wait_s) == (False, 13.0, 1.0)
    assert gcra.check(13.0, 10.0, interval=1.0, capacity=3).allowed is False
    assert gcra.check(12.0, 10.0, interval=1.0, capacity=3) == gcra.Step(True, 12.0, 0.0, 1)
    assert gcra.charge(5.0, 10.0, interval=0.5, cost=4) == 12.0
