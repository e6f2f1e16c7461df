"""A crashed inference step fails only the streams in it; the engine keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any

from switchyard.engine import Failed, Finished, GenerationEngine, TextChunk
from switchyard.lm import KVCache, Logits, ModelConfig
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams


class FlakyModel:
    """The real edge runtime, with a decode step that fails while ``armed`` (fault injection)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False

    @property
    def config(self) -> ModelConfig:
        return self.inner.config  # type: ignore[no-any-return]

    @property
    def context_window(self) -> int:
        return self.inner.context_window  # type: ignore[no-any-return]

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        return self.inner.prefill(token_ids, cache)  # type: ignore[no-any-return]

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if self.armed:
            self.armed = False
            raise RuntimeError("injected device fault")
        return self.inner.decode(token_ids, caches)  # type: ignore[no-any-return]


async def _collect(
    engine: GenerationEngine, text: str, max_tokens: int, started: asyncio.Event | None = None
) -> list[object]:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    events: list[object] = []
    async for ev in engine.generate([ChatMessage("user", text)], params):
        events.append(ev)
        if started is not None and isinstance(ev, TextChunk):
            started.set()
    return events


async def test_failed_step_fails_its_streams_and_the_engine_recovers(demo_models: Any) -> None:
    from edge_runtime.onnx_lm import load

    model = FlakyModel(load(demo_models.edge))
    engine = GenerationEngine(model, ChatTokenizer(demo_models.edge), max_running=2)
    engine.start()
    try:
        # Two streams running; a third waits for a slot and is not part of the failing step.
        started = [asyncio.Event(), asyncio.Event()]
        running = [asyncio.create_task(_collect(engine, f"Story {i}", 900, started[i])) for i in range(2)]
        for event in started:  # both are streaming before the fault is armed
            await asyncio.wait_for(event.wait(), 30)
        waiting = asyncio.create_task(_collect(engine, "Later", 5))
        await asyncio.sleep(0)
        model.armed = True
        results = await asyncio.gather(*running)
        for events in results:
            assert isinstance(events[-1], Failed)
            assert events[-1].code == "inference_error"
            assert "RuntimeError" in events[-1].message
            assert any(isinstance(ev, TextChunk) for ev in events)  # it had been streaming
        later = await waiting
        assert isinstance(later[-1], Finished) and later[-1].completion_tokens == 5
        # And the engine keeps serving new work.
        after = await _collect(engine, "After", 4)
        assert isinstance(after[-1], Finished) and after[-1].completion_tokens == 4
    finally:
        engine.close()
