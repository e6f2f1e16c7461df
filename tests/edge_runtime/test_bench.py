"""``switchyard bench edge --json`` end to end on the quick demo model (few tokens, so it is fast)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.cli import main


def test_bench_edge_json_last_line(demo_models: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "edge", "--model", str(demo_models.edge), "--tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["tokens_per_s"]) == {"1", "4", "8", "16"}
    assert all(v > 0 for v in report["tokens_per_s"].values())
    assert 0 < report["ttft_ms"]["p50"] <= report["ttft_ms"]["p99"]
    assert report["followup_ttft_ms"]["cold"] > 0 and report["followup_ttft_ms"]["reused"] > 0
    assert report["history_tokens"] > 500
