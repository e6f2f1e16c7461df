"""A runtime with a fixed KV pool: the engine admits by the pool's own accounting and queues the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from switchyard.engine import Finished, GenerationEngine
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams


async def test_requests_beyond_the_pool_wait_and_all_complete(demo_models: Any) -> None:
    from cloud_backend.torch_lm import load

    probe = load(demo_models.cloud).kv_reservation_bytes(40, 200)
    lm = load(demo_models.cloud, kv_budget_bytes=2 * probe + probe // 2)  # room for two such requests
    engine = GenerationEngine(lm, ChatTokenizer(demo_models.cloud), max_running=8)
    assert engine.max_kv_bytes == lm.kv_capacity_bytes
    engine.start()
    try:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, engine.load()[0])
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())

        async def one(i: int) -> Finished:
            params = SamplingParams(max_tokens=200, ignore_eos=True)
            events = [ev async for ev in engine.generate([ChatMessage("user", f"Question {i}?")], params)]
            assert isinstance(events[-1], Finished), events[-1]
            return events[-1]

        done = await asyncio.gather(*(one(i) for i in range(5)))
        watcher.cancel()
        assert all(d.completion_tokens == 200 for d in done)
        assert 1 <= peak <= 2  # never more running than the pool holds
    finally:
        engine.close()
