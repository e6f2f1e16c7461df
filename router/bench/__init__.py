"""``switchyard bench router``: the router's overhead in front of instant-streaming fake upstreams.

Requests/s and time to first token at several concurrency levels, through the router (classifier,
policy, balancing, session and prompt-cache look-ups, per-token relay) against the same fake
upstreams reached directly, for native nodes and OpenAI-compatible upstreams; and the latency of a
prompt-cache hit through the router. Everything runs on loopback in separate processes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "measure the router's overhead against instant-streaming fake upstreams on loopback"
    p = sub.add_parser("router", help=text, description=text)
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.add_argument("--tokens", type=int, default=32, help="tokens per reply (default 32)")
    p.add_argument(
        "--concurrency", default="1,32,128", help="comma-separated concurrent streams (default 1,32,128)"
    )
    p.add_argument("--seconds", type=float, default=2.5, help="measured seconds per level and path")
    p.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds before each level")
    p.add_argument("--requests", type=int, default=None, help="at most this many requests per level")
    p.add_argument(
        "--kinds", default="native,openai", help="upstream kinds to measure: native, openai (default both)"
    )
    p.add_argument(
        "--turns", type=int, default=4, help="turns per conversation over the native protocol (default 4)"
    )
    p.add_argument("--cache-requests", type=int, default=500, help="prompt-cache hits to time (0: skip)")
    p.add_argument("--policy", type=Path, default=None, help="routing policy (default: cost-saver)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the router to its own CPU")
    p.add_argument("--router-log-level", default="INFO", help="the router's log level (default INFO)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from router.bench.run import BenchOptions, run

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in ("native", "openai") for k in kinds):
        raise SystemExit(f"--kinds takes native and/or openai, got {args.kinds!r}")
    opts = BenchOptions(
        tokens=args.tokens,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        seconds=args.seconds,
        warmup_s=args.warmup,
        max_requests=args.requests,
        kinds=kinds,
        turns=args.turns,
        cache_requests=args.cache_requests,
        pin=not args.no_pin,
        router_log_level=args.router_log_level,
        **({"policy": args.policy.resolve()} if args.policy else {}),
    )
    report = run(opts, print)
    for line in report.lines():
        print(line)
    if args.json:
        print(json.dumps(report.as_json()))
    return 0
