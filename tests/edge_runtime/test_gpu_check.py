"""The GPU check script on a machine without CUDA: it says so and runs the CPU parts."""

from __future__ import annotations

import json

import pytest

from edge_runtime.gpu_check import main


def test_cpu_only_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--shape", "tiny", "--steps", "3", "--prompt", "16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if report["cuda_available"]:
        pytest.skip("CUDA is here: the CPU-only report does not apply")
    assert "not available" in report["note"]
    assert report["parity_max_abs_logit_diff"]["cpu_io_binding_vs_cpu"] < 1e-4
    cpu = report["timings"]["cpu"]
    for mode in ("plain", "io_binding"):
        assert cpu[mode]["ms_per_step_b1"] > 0
        assert set(cpu[mode]["tokens_per_s"]) == {"8", "32"}
