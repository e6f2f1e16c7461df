"""``switchyard bench cloud``: throughput, latency and tensor-parallel step time of the cloud backend.

Everything runs in this process through the same ``GenerationEngine`` the node serves with (no network),
so the numbers are the engine's and the model runtime's. Tokens/s at 1, 4, 16 and 32 concurrent requests
against the same requests served one at a time; time to first token; prefill tokens requested versus
computed for requests sharing a long system prompt; and the decode step time at TP=1 and TP=2.

Replies are 64 tokens by default, as in ``bench edge``. The batching speedup depends on reply length:
decode steps batch well (16 rows cost about 2.5 one-row steps on the demo model), while the prompts
of requests arriving together are prefilled in one call that batches less well, so the shorter the
replies, the larger the prefill's share and the lower the speedup (``--tokens 24`` gives about 5.5x
where 64 gives about 6.3x on the 2-core build machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.engine import Finished, GenerationEngine, TextChunk
from switchyard.lm import KVCache
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams

CONCURRENCY = (1, 4, 16, 32)
SYSTEM_PROMPT_TOKENS = 500
SHARED_PREFIX_REQUESTS = 8
ROUNDS = 6  # timed rounds per figure, after one untimed; the fastest counts (the machine is shared)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cloud`` to ``switchyard bench``'s sub-commands."""
    text = "benchmark the cloud backend: tokens/s by concurrency, TTFT, shared prefix, TP step time"
    p = sub.add_parser("cloud", help=text, description=text)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the demo cloud model)")
    p.add_argument("--data-dir", type=Path, default=None, help="where the demo models live")
    p.add_argument(
        "--tokens", type=int, default=64, help="tokens generated per request (default 64, as bench edge)"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class _Run:
    tokens: int
    seconds: float
    ttft_s: tuple[float, ...]
    prompt_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


async def _one(
    engine: GenerationEngine, messages: list[ChatMessage], params: SamplingParams
) -> tuple[int, float, int]:
    start = time.perf_counter()
    first = 0.0
    tokens = prompt = 0
    async for ev in engine.generate(messages, params):
        if isinstance(ev, TextChunk):
            if not first:
                first = time.perf_counter() - start
            tokens += ev.tokens
        elif isinstance(ev, Finished):
            tokens, prompt = ev.completion_tokens, ev.prompt_tokens
        else:
            raise RuntimeError(f"benchmark request failed: {ev}")
    return tokens, first, prompt


async def _serve(
    engine: GenerationEngine, requests: list[list[ChatMessage]], params: SamplingParams, *, concurrent: bool
) -> _Run:
    start = time.perf_counter()
    if concurrent:
        results = await asyncio.gather(*(_one(engine, m, params) for m in requests))
    else:
        results = [await _one(engine, m, params) for m in requests]
    seconds = time.perf_counter() - start
    return _Run(
        tokens=sum(r[0] for r in results),
        seconds=seconds,
        ttft_s=tuple(r[1] for r in results),
        prompt_tokens=sum(r[2] for r in results),
    )


def _requests(n: int, system: str | None = None, tag: str = "") -> list[list[ChatMessage]]:
    """``n`` chats; a distinct ``tag`` per round keeps one round's prompts out of the next one's cache."""
    head = [ChatMessage("system", system)] if system else []
    return [
        [*head, ChatMessage("user", f"{tag}Question {i}: tell me about the weather in city {i}.")]
        for i in range(n)
    ]


async def _alternating(
    engine: GenerationEngine, params: SamplingParams, setups: dict[str, tuple[int, bool]]
) -> dict[str, list[_Run]]:
    """``ROUNDS`` timed runs of each setup (``n`` requests, concurrent or not), after one untimed each.

    The setups take turns round by round, so every figure sees the same machine over the same span;
    comparing figures measured minutes apart on a shared machine would compare its load instead.
    """
    runs: dict[str, list[_Run]] = {label: [] for label in setups}
    for r in range(-1, ROUNDS):
        for label, (n, concurrent) in setups.items():
            requests = _requests(n, tag=f"[{label} round {r}] ")
            run = await _serve(engine, requests, params, concurrent=concurrent)
            if r >= 0:
                runs[label].append(run)
    return runs


def _fastest(runs: list[_Run]) -> _Run:
    return max(runs, key=lambda run: run.tokens_per_s)


def _system_prompt(tokenizer: ChatTokenizer, tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens (words added until the tokenizer says so)."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words))) < tokens:
        words.extend(f"rule{len(words) % 50}" for _ in range(10))
    while len(words) > 1 and len(tokenizer.encode(" ".join(words))) > tokens:
        words.pop()
    return " ".join(words)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _engine_figures(model_dir: Path, new_tokens: int, say: Any) -> dict[str, Any]:
    from cloud_backend.torch_lm import load

    lm = load(model_dir)
    tokenizer = ChatTokenizer(model_dir)
    engine = GenerationEngine(lm, tokenizer, max_running=max(CONCURRENCY), max_queued=1024)
    engine.start()
    try:
        engine.warm_up()
        params = SamplingParams(max_tokens=new_tokens, ignore_eos=True, temperature=0.0)
        setups = {**{str(n): (n, True) for n in CONCURRENCY}, "one at a time": (16, False)}
        runs = await _alternating(engine, params, setups)
        per_level: dict[str, float] = {}
        for n in CONCURRENCY:
            per_level[str(n)] = round(_fastest(runs[str(n)]).tokens_per_s, 1)
            say(f"{n:>3} concurrent: {per_level[str(n)]:8.1f} tokens/s")
        sequential = _fastest(runs["one at a time"])
        speedups = [
            c.tokens_per_s / s.tokens_per_s for c, s in zip(runs["16"], runs["one at a time"], strict=True)
        ]
        say(f" 16 one at a time: {sequential.tokens_per_s:8.1f} tokens/s")
        ttfts = [t for n in CONCURRENCY for run in runs[str(n)] for t in run.ttft_s]
        system = _system_prompt(tokenizer, SYSTEM_PROMPT_TOKENS)
        before = lm.prefill_stats
        shared = await _serve(engine, _requests(SHARED_PREFIX_REQUESTS, system), params, concurrent=True)
        computed = lm.prefill_stats.computed - before.computed
        say(
            f"shared prefix: {computed} prefill tokens computed for {shared.prompt_tokens} requested "
            f"({SHARED_PREFIX_REQUESTS} requests, {len(tokenizer.encode(system))}-token system prompt)"
        )
        pool = lm.pool
        kv = {
            "block_size": pool.block_size,
            "blocks": pool.usable_blocks,
            "blocks_cached": pool.cached_blocks,
            "capacity_bytes": lm.kv_capacity_bytes,
        }
    finally:
        engine.close()
    return {
        "tokens_per_s": per_level,
        "sequential_tokens_per_s": round(sequential.tokens_per_s, 1),
        # Each round ran the 16 concurrent and the 16 sequential requests back to back: the median of
        # the rounds' own ratios compares them under the same machine load, and one lucky round of
        # either kind cannot swing it the way it swings a ratio of two best rounds.
        "speedup_16_vs_sequential": round(statistics.median(speedups), 2),
        "speedup_16_vs_sequential_of_best_rounds": round(per_level["16"] / sequential.tokens_per_s, 2),
        "rounds": ROUNDS,
        "ttft_ms": {
            "p50": round(1000 * _percentile(ttfts, 0.5), 1),
            "p99": round(1000 * _percentile(ttfts, 0.99), 1),
        },
        "shared_prefix": {
            "requests": SHARED_PREFIX_REQUESTS,
            "system_prompt_tokens": len(tokenizer.encode(system)),
            "prefill_tokens_computed": computed,
            "prefill_tokens_requested": shared.prompt_tokens,
            "prefix_sharing": computed < shared.prompt_tokens,
        },
        "kv": kv,
    }


def _tp_step_ms(model_dir: Path, tp: int, batch: int = 4, steps: int = 20) -> float:
    """Mean wall time of one batched decode step on a ``tp``-rank group (rank 0 in this process)."""
    import torch

    from cloud_backend.tp_launch import launch

    threads = torch.get_num_threads()
    lm = launch(model_dir, tp)
    try:
        # The second of two identical rounds is timed: CPU kernels are set up per shape on first use.
        for _ in range(2):
            caches: list[KVCache] = [lm.prefill([1 + i, 2, 3, 4, 5, 6, 7, 8])[1] for i in range(batch)]
            tokens = [5] * batch
            start = time.perf_counter()
            for _ in range(steps):
                _, caches = lm.decode(tokens, caches)
            elapsed = time.perf_counter() - start
        return 1000 * elapsed / steps
    finally:
        lm.close()
        torch.set_num_threads(threads)


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return Path(args.model)
    from switchyard.modelbuild.build import ensure_models
    from switchyard.paths import default_data_dir

    return Path(ensure_models(args.data_dir or default_data_dir()).cloud)


def run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    model_dir = _model_dir(args)
    say(f"cloud backend benchmark on {model_dir}")
    figures = asyncio.run(_engine_figures(model_dir, args.tokens, say))
    step = {str(tp): round(_tp_step_ms(model_dir, tp), 2) for tp in (1, 2)}
    say(f"decode step (batch 4): TP=1 {step['1']} ms, TP=2 {step['2']} ms")
    figures["tp_step_ms"] = step
    if args.json:
        print(json.dumps(figures), flush=True)
    return 0
