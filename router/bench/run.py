"""Orchestration of ``switchyard bench router``: processes up, levels measured, processes down.

For each upstream kind, one router is started in front of the fake upstream, and each concurrency
level is measured direct then through the router, back to back, so a noisy neighbour on the shared
CPUs hits both sides of a ratio alike.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from router.bench import procs
from router.bench.load import (
    Client,
    NativeDirect,
    OpenAIStream,
    Prompts,
    RouterWebSocket,
    cache_hits,
    run_level,
)
from router.bench.report import BenchReport, CacheHitStats, LevelStats, Results
from switchyard.paths import POLICIES_DIR


@dataclass(frozen=True, slots=True)
class BenchOptions:
    tokens: int = 32
    concurrency: tuple[int, ...] = (1, 32, 128)
    seconds: float = 2.5  # measured per level and path
    warmup_s: float = 0.3
    max_requests: int | None = None  # per level and path; None: as many as fit in ``seconds``
    kinds: tuple[str, ...] = ("native", "openai")
    turns: int = 4  # turns per conversation over the native protocol (WebSocket sessions)
    cache_requests: int = 500
    pin: bool = True
    policy: Path = field(default_factory=lambda: POLICIES_DIR / "cost-saver.yaml")
    router_log_level: str = "INFO"


async def run_bench(opts: BenchOptions, say: Callable[[str], None] = lambda _line: None) -> BenchReport:
    layout = procs.cpu_layout(opts.pin)
    if layout.pinned:
        procs.pin(os.getpid(), layout.others)
    secret = secrets.token_hex(16)
    prompts = Prompts()
    results: Results = {}
    cache_hit: CacheHitStats | None = None
    say(
        f"router on CPU {list(layout.router)}, load generator and fake upstreams on CPU {list(layout.others)}"
        if layout.pinned
        else "CPUs not pinned"
    )
    fakes, fake_port = await procs.start_fakes(tokens=opts.tokens, secret=secret, cpus=layout.others)
    try:
        with tempfile.TemporaryDirectory(prefix="sy-bench-router-") as tmp:
            for kind in opts.kinds:
                upstream = (
                    procs.native_upstream(fake_port) if kind == "native" else procs.openai_upstream(fake_port)
                )
                port = procs.free_port()
                config = procs.router_config(port=port, policy=opts.policy, upstream=upstream)
                router = await procs.start_router(
                    config, Path(tmp), secret=secret, cpus=layout.router, log_level=opts.router_log_level
                )
                say(f"{kind}: router pid {router.proc.pid} on port {port}, fake upstream on port {fake_port}")
                try:
                    probe = functools.partial(procs.cpu_seconds, router.proc.pid)
                    results[kind] = await _measure_kind(
                        kind, opts, prompts, fake_port, port, secret, probe, say
                    )
                    if kind == opts.kinds[-1] and opts.cache_requests > 0:
                        base = f"http://127.0.0.1:{port}/v1"
                        latencies, hits = await cache_hits(base, opts.cache_requests, tokens=opts.tokens)
                        cache_hit = CacheHitStats.of(latencies, hits)
                        say(
                            f"cache hits via {kind} router: p50 {cache_hit.p50_ms:.3f} ms, "
                            f"p99 {cache_hit.p99_ms:.3f} ms ({hits}/{len(latencies)} hits)"
                        )
                finally:
                    await router.stop()
    finally:
        await fakes.stop()
    config = {
        "tokens": opts.tokens,
        "turns_per_session": opts.turns,
        "concurrency": list(opts.concurrency),
        "seconds_per_level": opts.seconds,
        "max_requests_per_level": opts.max_requests,
        "policy": opts.policy.stem,
        "router_log_level": opts.router_log_level,
        "cpu_layout": layout.as_json(),
        "python": platform.python_version(),
        "client_api": {"native": "router WebSocket API", "openai": "router OpenAI API (streamed)"},
    }
    return BenchReport(results=results, cache_hit=cache_hit, config=config)


async def _measure_kind(
    kind: str,
    opts: BenchOptions,
    prompts: Prompts,
    fake_port: int,
    router_port: int,
    secret: str,
    router_cpu: Callable[[], float | None],
    say: Callable[[str], None],
) -> dict[str, dict[int, LevelStats]]:
    direct: Client
    via: Client
    if kind == "native":
        direct = NativeDirect(f"ws://127.0.0.1:{fake_port}/node", secret, opts.tokens, opts.turns)
        via = RouterWebSocket(f"ws://127.0.0.1:{router_port}/v1/chat/ws", opts.tokens, opts.turns)
    else:
        direct = OpenAIStream(f"http://127.0.0.1:{fake_port}/v1", "fake-instant", opts.tokens)
        via = OpenAIStream(f"http://127.0.0.1:{router_port}/v1", "switchyard", opts.tokens)
    out: dict[str, dict[int, LevelStats]] = {"direct": {}, "router": {}}
    try:
        for level in opts.concurrency:
            for path, client in (("direct", direct), ("router", via)):
                result = await run_level(
                    client,
                    prompts,
                    level,
                    seconds=opts.seconds,
                    max_requests=opts.max_requests,
                    warmup_s=opts.warmup_s,
                    cpu_probe=router_cpu if path == "router" else None,
                )
                stats = LevelStats.of(result)
                out[path][level] = stats
                if stats.router_cpu_us_per_request is not None:
                    note = f", router CPU {stats.router_cpu_us_per_request:.0f} us/request"
                else:
                    note = ""
                note += f", {result.errors} errors (first: {result.first_error})" if result.errors else ""
                say(
                    f"{kind:<6} {path:<6} {level:>3} streams: {stats.rps:8.1f} req/s, "
                    f"TTFT p50 {stats.ttft_p50_ms:.3f} ms p99 {stats.ttft_p99_ms:.3f} ms{note}"
                )
    finally:
        await direct.close()
        await via.close()
    return out


def run(opts: BenchOptions, say: Callable[[str], None]) -> BenchReport:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_bench(opts, say))
    return uvloop.run(run_bench(opts, say))
