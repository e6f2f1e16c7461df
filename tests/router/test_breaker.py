"""The circuit breaker as a state machine, driven with explicit times."""

from __future__ import annotations

from router.breaker import BreakerConfig, CircuitBreaker


def test_consecutive_failures_eject_then_half_open_trial_recovers() -> None:
    b = CircuitBreaker(BreakerConfig(max_consecutive=3, cooldown_s=2.0))
    for _ in range(2):
        b.record(True, now=0.0)
    assert b.available(0.0)
    b.record(True, now=0.0)
    assert b.ejected and not b.available(1.0)
    assert b.available(2.0)  # half-open
    b.claim(2.0)
    assert not b.available(2.0)  # one trial at a time
    b.record(False, now=2.1)
    assert not b.ejected and b.available(2.1)


def test_failed_trial_doubles_the_cooldown() -> None:
    b = CircuitBreaker(BreakerConfig(max_consecutive=1, cooldown_s=1.0, max_cooldown_s=3.0))
    b.record(True, now=0.0)
    assert b.open_until == 1.0
    b.claim(1.0)
    b.record(True, now=1.0)
    assert b.open_until == 3.0
    b.claim(3.0)
    b.record(True, now=3.0)
    assert b.open_until == 6.0  # capped at 3 s


def test_failure_rate_ejects_an_outlier() -> None:
    b = CircuitBreaker(BreakerConfig(max_consecutive=100, window=10, min_window=10, max_failure_rate=0.5))
    for failed in (False, True, True, False, True, False, True, False, True, True):
        assert not b.ejected
        b.record(failed, now=0.0)
    assert b.ejected  # 6 of the last 10 failed


def test_successes_keep_it_closed() -> None:
    b = CircuitBreaker()
    for i in range(100):
        b.record(i % 10 == 0, now=float(i))
    assert not b.ejected
