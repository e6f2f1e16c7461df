"""Deltas that queue up under load are relayed as one, with nothing lost or reordered."""

from __future__ import annotations

import asyncio

from router.upstream.base import StreamEvent
from router.upstream.node_client import _coalesce
from switchyard import wire


async def test_queued_deltas_merge_up_to_the_end_of_stream() -> None:
    queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
    for ev in (wire.Delta(1, "b", 1), wire.Delta(1, "c", 2), wire.Done(1, "stop", 3, 4)):
        queue.put_nowait(ev)
    merged, held = _coalesce(wire.Delta(1, "a", 1), queue)
    assert merged == wire.Delta(1, "abc", 4)
    assert held == wire.Done(1, "stop", 3, 4)
    assert queue.empty()


async def test_merge_stops_when_the_queue_is_empty() -> None:
    queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
    queue.put_nowait(wire.Delta(1, "y", 1))
    merged, held = _coalesce(wire.Delta(1, "x", 1), queue)
    assert (merged, held) == (wire.Delta(1, "xy", 2), None)
