"""``switchyard bench router`` at tiny scale: the machinery runs end to end and the JSON keeps its shape."""

from __future__ import annotations

import json

from router.bench.load import LevelResult
from router.bench.report import BenchReport, LevelStats, percentile
from router.bench.run import BenchOptions, run_bench

LEVEL_KEYS = {"rps", "ttft_p50_ms", "ttft_p99_ms", "requests", "errors"}


async def test_bench_router_runs_at_tiny_scale() -> None:
    opts = BenchOptions(
        tokens=4,
        concurrency=(1, 2),
        seconds=20.0,  # bounded by max_requests long before this
        warmup_s=0.0,
        max_requests=2,
        turns=2,
        cache_requests=3,
        pin=False,
    )
    lines: list[str] = []
    report = await run_bench(opts, lines.append)
    out = json.loads(json.dumps(report.as_json()))  # what --json prints is plain JSON
    for kind in ("native", "openai"):
        block = out[kind]
        for path in ("direct", "router"):
            assert set(block[path]) == {"1", "2"}
            for level in block[path].values():
                assert LEVEL_KEYS <= set(level)
                assert level["requests"] == 2 and level["errors"] == 0
                assert level["rps"] > 0 and 0 < level["ttft_p50_ms"] <= level["ttft_p99_ms"]
        assert set(block["ratios"]) == {"1", "2"}
        assert set(block["ratios"]["1"]) == {"rps", "added_ttft_p50_ms", "added_ttft_p99_ms"}
    assert set(out["added_ttft_p50_ms_at_1"]) == {"native", "openai"}
    assert all(isinstance(v, float) for v in out["added_ttft_p50_ms_at_1"].values())
    assert out["rps_ratio_at_32"] == {"native": None, "openai": None}  # level 32 not run
    assert out["cache_hit_ms"]["hits"] == out["cache_hit_ms"]["requests"] == 3
    assert 0 < out["cache_hit_ms"]["p50"] <= out["cache_hit_ms"]["p99"]
    assert set(out["met"]) == {"added_ttft_p50_ms_at_1", "rps_ratio_at_32", "cache_hit_p50_ms"}
    assert out["config"]["concurrency"] == [1, 2]
    assert report.lines()[0].startswith("kind")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 99) == 5.0


def test_ratios_compare_router_with_direct_level_by_level() -> None:
    def stats(rps: float, p50_ms: float) -> LevelStats:
        return LevelStats.of(LevelResult(1, int(rps), 0, 1.0, (p50_ms / 1e3,)))

    report = BenchReport(
        results={
            "native": {
                "direct": {1: stats(1000, 0.5), 32: stats(2000, 10.0)},
                "router": {1: stats(500, 0.9), 32: stats(1500, 12.0)},
            }
        },
        cache_hit=None,
        config={},
    )
    out = report.as_json()
    assert out["openai"] is None
    assert out["added_ttft_p50_ms_at_1"] == {"native": 0.4, "openai": None}
    assert out["rps_ratio_at_32"] == {"native": 0.75, "openai": None}
    assert out["met"] == {"added_ttft_p50_ms_at_1": True, "rps_ratio_at_32": True, "cache_hit_p50_ms": None}
