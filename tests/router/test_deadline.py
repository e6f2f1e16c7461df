"""The relay's per-reply deadline timer: the same outcomes as a timeout around every wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router.deadline import StreamDeadline
from router.upstream.base import StreamEvent
from switchyard import wire


async def _stream(n: int, *, stall_after: bool = False) -> AsyncIterator[StreamEvent]:
    for i in range(n):
        yield wire.Delta(1, f" t{i}", 1)
    if stall_after:
        await asyncio.sleep(3600)
    yield wire.Done(1, "stop", 1, n)


async def test_events_pass_through_before_the_deadline() -> None:
    d = StreamDeadline(time.perf_counter() + 5)
    stream = _stream(3)
    try:
        got = [await d.next(stream) for _ in range(4)]
    finally:
        d.close()
    assert [type(e) for e in got] == [wire.Delta, wire.Delta, wire.Delta, wire.Done]


async def test_a_stalled_stream_times_out_at_the_deadline() -> None:
    d = StreamDeadline(time.perf_counter() + 0.05)
    stream = _stream(1, stall_after=True)
    start = time.perf_counter()
    try:
        await d.next(stream)
        with pytest.raises(TimeoutError):
            await d.next(stream)
    finally:
        d.close()
    assert 0.04 <= time.perf_counter() - start < 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timer's cancel was taken back


async def test_a_deadline_passing_between_waits_fails_the_next_wait() -> None:
    d = StreamDeadline(time.perf_counter() + 0.02)
    stream = _stream(3)
    try:
        await d.next(stream)
        await asyncio.sleep(0.05)  # the caller is busy (sending the event) when the deadline passes
        with pytest.raises(TimeoutError):
            await d.next(stream)
    finally:
        d.close()


async def test_an_outside_cancel_stays_a_cancel() -> None:
    d = StreamDeadline(time.perf_counter() + 5)

    async def relay() -> None:
        await d.next(_stream(0, stall_after=True))

    task = asyncio.create_task(relay())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    d.close()
