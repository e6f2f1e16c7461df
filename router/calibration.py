"""Calibrating the difficulty threshold to a target cloud share.

A policy can say "send about 30% to the cloud" instead of naming a score threshold. Each router
records the classifier scores of its traffic into time windows of a histogram; the threshold is
the score above which the target share of recent traffic lies, recomputed every second. With
Redis the windows are shared (HINCRBY on one hash per window), so every replica computes the
same threshold from all replicas' traffic, and the share tracks its target when the mix shifts.

The quantile arithmetic is pure; the stores only add and sum bins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

BINS = 200


def bin_of(score: float) -> int:
    return min(BINS - 1, max(0, int(score * BINS)))


def threshold_for_share(counts: Sequence[int], share: float) -> float | None:
    """The score t such that about ``share`` of the scores are >= t (at most ``share`` of the counts).

    The bin the quantile falls in is split as if its scores were spread evenly across it: the
    classifier's scores crowd into a narrow band, where one bin can hold a few per cent of traffic.
    ``None`` when there are no scores. A share of 0 gives a threshold above every score.
    """
    total = sum(counts)
    if total == 0:
        return None
    allowed = share * total
    above = 0
    for b in range(BINS - 1, -1, -1):
        n = counts[b]
        if above + n > allowed:
            return (b + 1 - (allowed - above) / n) / BINS
        above += n
    return 0.0


class WindowStore(Protocol):
    async def add(self, window: int, counts: dict[int, int]) -> None: ...

    async def read(self, windows: Sequence[int]) -> list[int]: ...


class MemoryWindows:
    def __init__(self) -> None:
        self._windows: dict[int, list[int]] = {}

    async def add(self, window: int, counts: dict[int, int]) -> None:
        bins = self._windows.setdefault(window, [0] * BINS)
        for b, n in counts.items():
            bins[b] += n
        for old in [w for w in self._windows if w < window - 1000]:
            del self._windows[old]

    async def read(self, windows: Sequence[int]) -> list[int]:
        total = [0] * BINS
        for w in windows:
            for b, n in enumerate(self._windows.get(w, ())):
                total[b] += n
        return total


class RedisWindows:
    def __init__(self, client: Any, *, prefix: str = "sy:calib:", ttl_s: int = 600) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl = ttl_s

    async def add(self, window: int, counts: dict[int, int]) -> None:
        key = f"{self._prefix}{window}"
        async with self._r.pipeline(transaction=False) as pipe:
            for b, n in counts.items():
                pipe.hincrby(key, str(b), n)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def read(self, windows: Sequence[int]) -> list[int]:
        async with self._r.pipeline(transaction=False) as pipe:
            for w in windows:
                pipe.hgetall(f"{self._prefix}{w}")
            results = await pipe.execute()
        total = [0] * BINS
        for fields in results:
            for b, n in fields.items():
                total[int(b)] += int(n)
        return total


class ShareCalibrator:
    """Keeps the score threshold that sends ``target_share`` of recent traffic to the cloud."""

    def __init__(
        self,
        store: WindowStore,
        *,
        window_s: float = 10.0,
        windows: int = 6,
        min_samples: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window_s = window_s
        self._windows = windows
        self._min_samples = min_samples
        self._clock = clock
        self._pending: dict[int, int] = {}
        self._counts: list[int] = [0] * BINS
        self._task: asyncio.Task[None] | None = None

    def record(self, score: float) -> None:
        """Hot path: one dict update; flushed to the store by ``sync``."""
        b = bin_of(score)
        self._pending[b] = self._pending.get(b, 0) + 1

    def threshold(self, target_share: float, fallback: float) -> float:
        if sum(self._counts) < self._min_samples:
            return fallback
        t = threshold_for_share(self._counts, target_share)
        return fallback if t is None else t

    async def sync(self) -> None:
        """Flush this replica's scores and re-read the recent windows of all replicas."""
        now_window = int(self._clock() // self._window_s)
        if self._pending:
            pending, self._pending = self._pending, {}
            await self._store.add(now_window, pending)
        recent = [now_window - i for i in range(self._windows)]
        self._counts = await self._store.read(recent)

    def start(self, interval_s: float = 1.0) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.sync()
                except Exception as exc:  # keep the last threshold while the store is away
                    log.warning("calibration sync failed: %s", exc)
                await asyncio.sleep(interval_s)

        self._task = asyncio.create_task(loop(), name="share-calibrator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
