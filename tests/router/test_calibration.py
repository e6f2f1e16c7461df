"""Calibration to a cloud share: the quantile, the shared windows, and tracking under a shifted mix."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as redis_asyncio

from router.calibration import (
    BINS,
    MemoryWindows,
    RedisWindows,
    ShareCalibrator,
    bin_of,
    threshold_for_share,
)
from router.policy import Features, decide, parse_policy

POLICY = parse_policy(
    {
        "name": "thirty-percent",
        "sticky": False,
        "calibration": {"target_cloud_share": 0.3, "fallback_threshold": 0.5},
        "rules": [
            {"name": "hard", "when": {"score": {"gte": "calibrated"}}, "route": "cloud"},
            {"name": "rest", "route": "edge"},
        ],
    }
)


def test_threshold_for_share() -> None:
    counts = [0] * BINS
    for i in range(100):  # scores 0.00 .. 0.99, one each
        counts[int(i / 100 * BINS)] += 1
    # Any threshold in (0.69, 0.70] puts exactly 30 of the 100 scores above it.
    assert 0.69 < threshold_for_share(counts, 0.3) <= 0.70  # type: ignore[operator]
    assert threshold_for_share(counts, 0.0) > 0.99  # type: ignore[operator]  # above every score
    assert threshold_for_share(counts, 1.0) == 0.0
    assert threshold_for_share([0] * BINS, 0.5) is None


def test_the_threshold_splits_a_crowded_bin() -> None:
    """A tenth of the traffic in one bin: the threshold lands inside it, not at one of its edges."""
    draw = random.Random(3)
    width = 1 / BINS
    scores = [draw.uniform(0.0, 0.4) for _ in range(9000)] + [
        0.4 + draw.random() * width for _ in range(1000)
    ]
    counts = [0] * BINS
    for score in scores:
        counts[bin_of(score)] += 1
    threshold = threshold_for_share(counts, 0.05)
    assert threshold is not None and 0.4 < threshold < 0.4 + width
    assert sum(s >= threshold for s in scores) / len(scores) == pytest.approx(0.05, abs=0.005)


def test_calibrated_needs_a_calibration_section() -> None:
    with pytest.raises(ValueError, match="calibration"):
        parse_policy(
            {
                "name": "x",
                "rules": [
                    {"name": "a", "when": {"score": {"gte": "calibrated"}}, "route": "cloud"},
                    {"name": "b", "route": "edge"},
                ],
            }
        )


async def _share(cal: ShareCalibrator, draw: random.Random, mean: float, n: int, clock: list[float]) -> float:
    """Route n requests with scores around ``mean``; return the share sent to the cloud."""
    cloud = 0
    for i in range(n):
        score = min(1.0, max(0.0, draw.gauss(mean, 0.15)))
        cal.record(score)
        threshold = cal.threshold(0.3, 0.5)
        d = decide(
            POLICY, Features(prompt_tokens=1, conversation_tokens=1, score=score, score_threshold=threshold)
        )
        cloud += d.target == "cloud"
        if i % 20 == 19:  # the sync loop runs every second; traffic here is 20 requests a second
            clock[0] += 1.0
            await cal.sync()
    return cloud / n


async def test_share_tracks_its_target_when_the_mix_shifts() -> None:
    clock = [1_000_000.0]
    cal = ShareCalibrator(MemoryWindows(), window_s=10, windows=6, clock=lambda: clock[0])
    draw = random.Random(7)
    await _share(cal, draw, mean=0.3, n=400, clock=clock)  # warm-up
    easy = await _share(cal, draw, mean=0.3, n=1200, clock=clock)
    # The traffic turns harder: a fixed threshold of 0.5 would now send ~70% to the cloud.
    await _share(cal, draw, mean=0.6, n=1200, clock=clock)  # the windows refill with the new mix
    hard = await _share(cal, draw, mean=0.6, n=1200, clock=clock)
    assert easy == pytest.approx(0.3, abs=0.05)
    assert hard == pytest.approx(0.3, abs=0.05)


async def test_replicas_share_windows_through_redis(redis_url: str) -> None:
    clients = [redis_asyncio.from_url(redis_url) for _ in range(2)]
    prefix = f"calib-test-{random.random()}:"
    clock = [2_000_000.0]
    a, b = (
        ShareCalibrator(RedisWindows(c, prefix=prefix), min_samples=10, clock=lambda: clock[0])
        for c in clients
    )
    for _ in range(50):
        a.record(0.9)  # replica a only sees hard prompts
        b.record(0.1)  # replica b only easy ones
    await a.sync()
    await b.sync()
    await a.sync()
    # Both see the union: half the traffic at 0.9, so a 30% share puts the threshold above 0.9.
    assert a.threshold(0.3, 0.5) == b.threshold(0.3, 0.5)
    assert a.threshold(0.3, 0.5) > 0.9
    assert a.threshold(0.6, 0.5) < 0.2
    for c in clients:
        await c.aclose()
