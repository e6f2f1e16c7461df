"""``switchyard bench cloud --json`` end to end on the quick demo model (few tokens, so it is fast)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.cli import main


def test_bench_cloud_json_last_line(demo_models: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "cloud", "--model", str(demo_models.cloud), "--tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["tokens_per_s"]) == {"1", "4", "16", "32"}
    assert all(v > 0 for v in report["tokens_per_s"].values()) and report["sequential_tokens_per_s"] > 0
    assert report["speedup_16_vs_sequential"] > 0 and report["speedup_16_vs_sequential_of_best_rounds"] > 0
    assert 0 < report["ttft_ms"]["p50"] <= report["ttft_ms"]["p99"]
    # Eight requests behind one ~500-token system prompt: its blocks are computed once, then reused.
    shared = report["shared_prefix"]
    assert shared["prefix_sharing"] and shared["system_prompt_tokens"] > 400
    assert shared["prefill_tokens_computed"] < shared["prefill_tokens_requested"] / 3
    assert set(report["tp_step_ms"]) == {"1", "2"} and all(v > 0 for v in report["tp_step_ms"].values())
