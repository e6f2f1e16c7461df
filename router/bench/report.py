"""Figures of ``switchyard bench router``: per-level statistics, router/direct ratios and targets.

JSON shape (the last line printed with ``--json``)::

    {"native": {"direct": {"1": LEVEL, "32": LEVEL, ...}, "router": {...},
                "ratios": {"1": {"rps": R, "added_ttft_p50_ms": D, "added_ttft_p99_ms": D}, ...}},
     "openai": {... the same ...},
     "added_ttft_p50_ms_at_1": {"native": D, "openai": D},
     "rps_ratio_at_32": {"native": R, "openai": R},
     "cache_hit_ms": {"p50": MS, "p99": MS, "requests": N, "hits": N},
     "targets": {...}, "met": {...}, "config": {...}}

where LEVEL is ``{"rps", "ttft_p50_ms", "ttft_p99_ms", "requests", "errors"}``, and on the router
side also ``router_cpu_us_per_request`` (the router process's CPU time over the level per request:
steadier than requests/s when other processes share the machine). A headline figure
whose level was not measured (or a kind that was not run) is ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from router.bench.load import LevelResult

TARGET_ADDED_TTFT_P50_MS = 1.0  # at 1 stream
TARGET_RPS_RATIO = 0.7  # router over direct, at 32 streams
TARGET_CACHE_HIT_P50_MS = 2.0
KINDS = ("native", "openai")
PATHS = ("direct", "router")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LevelStats:
    rps: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    requests: int
    errors: int
    router_cpu_us_per_request: float | None = None  # router paths only

    @classmethod
    def of(cls, result: LevelResult) -> LevelStats:
        return cls(
            rps=result.requests / result.elapsed_s if result.requests else 0.0,
            ttft_p50_ms=percentile(result.ttfts_s, 50) * 1e3,
            ttft_p99_ms=percentile(result.ttfts_s, 99) * 1e3,
            requests=result.requests,
            errors=result.errors,
            router_cpu_us_per_request=None
            if result.cpu_s is None or not result.requests
            else result.cpu_s / result.requests * 1e6,
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rps": round(self.rps, 1),
            "ttft_p50_ms": round(self.ttft_p50_ms, 3),
            "ttft_p99_ms": round(self.ttft_p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
        }
        if self.router_cpu_us_per_request is not None:
            out["router_cpu_us_per_request"] = round(self.router_cpu_us_per_request, 1)
        return out


@dataclass(frozen=True, slots=True)
class CacheHitStats:
    p50_ms: float
    p99_ms: float
    requests: int
    hits: int

    @classmethod
    def of(cls, latencies_s: Sequence[float], hits: int) -> CacheHitStats:
        return cls(
            percentile(latencies_s, 50) * 1e3, percentile(latencies_s, 99) * 1e3, len(latencies_s), hits
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "p50": round(self.p50_ms, 3),
            "p99": round(self.p99_ms, 3),
            "requests": self.requests,
            "hits": self.hits,
        }


# kind -> path -> concurrency -> stats
Results = dict[str, dict[str, dict[int, LevelStats]]]


@dataclass(frozen=True)
class BenchReport:
    results: Results
    cache_hit: CacheHitStats | None
    config: dict[str, Any]

    def ratios(self, kind: str) -> dict[int, dict[str, float]]:
        paths = self.results.get(kind, {})
        direct, router = paths.get("direct", {}), paths.get("router", {})
        out: dict[int, dict[str, float]] = {}
        for level in sorted(set(direct) & set(router)):
            d, r = direct[level], router[level]
            out[level] = {
                "rps": r.rps / d.rps if d.rps else 0.0,
                "added_ttft_p50_ms": r.ttft_p50_ms - d.ttft_p50_ms,
                "added_ttft_p99_ms": r.ttft_p99_ms - d.ttft_p99_ms,
            }
        return out

    def _headline(self, level: int, key: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for kind in KINDS:
            r = self.ratios(kind).get(level)
            out[kind] = None if r is None else round(r[key], 3)
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            if kind not in self.results:
                out[kind] = None
                continue
            block: dict[str, Any] = {
                path: {str(c): s.as_json() for c, s in sorted(self.results[kind].get(path, {}).items())}
                for path in PATHS
            }
            block["ratios"] = {
                str(c): {k: round(v, 3) for k, v in r.items()} for c, r in self.ratios(kind).items()
            }
            out[kind] = block
        added = self._headline(1, "added_ttft_p50_ms")
        ratio = self._headline(32, "rps")
        out["added_ttft_p50_ms_at_1"] = added
        out["rps_ratio_at_32"] = ratio
        out["cache_hit_ms"] = self.cache_hit.as_json() if self.cache_hit else None
        out["targets"] = {
            "added_ttft_p50_ms_at_1_below": TARGET_ADDED_TTFT_P50_MS,
            "rps_ratio_at_32_at_least": TARGET_RPS_RATIO,
            "cache_hit_p50_ms_below": TARGET_CACHE_HIT_P50_MS,
        }
        out["met"] = {
            "added_ttft_p50_ms_at_1": _all_met(added.values(), lambda v: v < TARGET_ADDED_TTFT_P50_MS),
            "rps_ratio_at_32": _all_met(ratio.values(), lambda v: v >= TARGET_RPS_RATIO),
            "cache_hit_p50_ms": None
            if self.cache_hit is None
            else self.cache_hit.p50_ms < TARGET_CACHE_HIT_P50_MS,
        }
        out["config"] = self.config
        return out

    def lines(self) -> list[str]:
        rows = [
            f"{'kind':<7} {'streams':>7} | {'direct rps':>10} {'p50 ms':>8} {'p99 ms':>8} | "
            f"{'router rps':>10} {'p50 ms':>8} {'p99 ms':>8} | {'rps ratio':>9} {'+p50 ms':>8}"
        ]
        for kind in KINDS:
            paths = self.results.get(kind)
            if not paths:
                continue
            ratios = self.ratios(kind)
            for level in sorted(ratios):
                d, r = paths["direct"][level], paths["router"][level]
                rows.append(
                    f"{kind:<7} {level:>7} | {d.rps:>10.1f} {d.ttft_p50_ms:>8.3f} {d.ttft_p99_ms:>8.3f} | "
                    f"{r.rps:>10.1f} {r.ttft_p50_ms:>8.3f} {r.ttft_p99_ms:>8.3f} | "
                    f"{ratios[level]['rps']:>9.3f} {ratios[level]['added_ttft_p50_ms']:>8.3f}"
                )
        if self.cache_hit is not None:
            c = self.cache_hit
            rows.append(
                f"prompt-cache hit through the router (OpenAI API, not streamed): p50 {c.p50_ms:.3f} ms, "
                f"p99 {c.p99_ms:.3f} ms ({c.hits}/{c.requests} hits)"
            )
        return rows


def _all_met(values: Any, ok: Any) -> bool | None:
    present = [v for v in values if v is not None]
    return all(ok(v) for v in present) if present else None
