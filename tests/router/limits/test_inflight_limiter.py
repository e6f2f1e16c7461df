"""The router's in-flight cap: refuse at once past the limit, admit again after a release."""

from __future__ import annotations

import pytest

from router.limits import InflightLimiter


def test_refuses_past_the_cap_and_admits_after_release() -> None:
    guard = InflightLimiter(2)
    assert guard.try_acquire() and guard.try_acquire()
    assert guard.inflight == 2
    assert not guard.try_acquire()
    assert guard.inflight == 2  # a refusal holds nothing
    guard.release()
    assert guard.try_acquire()
    assert not guard.try_acquire()


def test_release_without_acquire_is_a_bug() -> None:
    guard = InflightLimiter(1)
    with pytest.raises(RuntimeError, match="without a matching"):
        guard.release()


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        InflightLimiter(0)
