"""Greedy decoding drivers shared by the runtime and engine tests: one sequence alone, and several in
one batch.

They take any ``switchyard.lm`` runtime with ``prefill_batch`` (or any ``GenerationEngine``), so the
edge and cloud runtimes are held to the same rule: a sequence's tokens and logits do not depend on the
batch it ran in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from switchyard.engine import Finished, GenerationEngine, TextChunk
from switchyard.lm import KVCache
from switchyard.wire import ChatMessage, SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
# Prompts of different lengths, so that a batch holds rows that start and end at different steps.
PROMPTS = (
    "Hi.",
    "Tell me about rivers and the towns that grew up along them.",
    "What is a queue?",
    "Explain recursion with an example of a function that calls itself until a base case.",
    "Why?",
    "List three uses of a hash table.",
)


def chat(text: str, system: str = "") -> tuple[ChatMessage, ...]:
    head = (ChatMessage("system", system),) if system else ()
    return (*head, ChatMessage("user", text))


async def ask(
    engine: GenerationEngine,
    messages: Sequence[ChatMessage],
    params: SamplingParams = GREEDY,
    session: str = "",
    first_token: asyncio.Event | None = None,
) -> tuple[str, Finished]:
    """The whole reply of one chat and how it finished; ``first_token`` is set when text first arrives."""
    text = ""
    async for ev in engine.generate(messages, params, session):
        if isinstance(ev, TextChunk):
            text += ev.text
            if first_token is not None:
                first_token.set()
        elif isinstance(ev, Finished):
            return text, ev
        else:
            raise AssertionError(f"unexpected event {ev}")
    raise AssertionError("stream ended without Finished")


def greedy_alone(lm: Any, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """``steps`` greedy tokens of ``prompt`` run on its own, with the logits each was picked from."""
    logits, cache = lm.prefill(prompt)
    out: list[int] = []
    seen: list[np.ndarray] = []
    for _ in range(steps):
        seen.append(logits)
        out.append(int(np.argmax(logits)))
        batch_logits, (cache,) = lm.decode([out[-1]], [cache])
        logits = batch_logits[0]
    return out, seen


def greedy_batched(
    lm: Any, prompts: Sequence[Sequence[int]], steps: Sequence[int], joins: Mapping[int, list[int]]
) -> tuple[list[list[int]], list[list[np.ndarray]]]:
    """Greedy tokens (and their logits) of every prompt, decoded in one running batch.

    Before step ``s`` the rows in ``joins[s]`` are prefilled together and join the batch; a row
    leaves as soon as it has ``steps[row]`` tokens, so the batch changes shape both ways.
    """
    got: list[list[int]] = [[] for _ in prompts]
    seen: list[list[np.ndarray]] = [[] for _ in prompts]
    active: list[int] = []
    caches: dict[int, KVCache] = {}
    last: dict[int, np.ndarray] = {}
    for step in range(max(joins) + max(steps) + 1):
        newcomers = joins.get(step, [])
        if newcomers:
            logits, fresh = lm.prefill_batch([list(prompts[i]) for i in newcomers], [None] * len(newcomers))
            for j, i in enumerate(newcomers):
                caches[i], last[i] = fresh[j], logits[j]
            active += newcomers
        for i in active:
            seen[i].append(last[i])
            got[i].append(int(np.argmax(last[i])))
        active = [i for i in active if len(got[i]) < steps[i]]
        if not active:
            if step > max(joins):
                break
            continue
        logits, out = lm.decode([got[i][-1] for i in active], [caches[i] for i in active])
        for j, i in enumerate(active):
            caches[i], last[i] = out[j], logits[j]
    return got, seen
