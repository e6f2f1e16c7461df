"""int8 export: the quantized graph loads in the runtime and stays close to the fp32 one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.onnx_lm import load
from edge_runtime.quantize import quantize_int8


def test_int8_model_runs_and_tracks_fp32(demo_models: Any, tmp_path: Path) -> None:
    int8_dir = tmp_path / "edge-int8"
    shutil.copytree(demo_models.edge, int8_dir)
    quantize_int8(int8_dir)
    ops = {node.op_type for node in onnx.load(str(int8_dir / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    prompt = list(range(10, 40))
    ref, _ = load(demo_models.edge).prefill(prompt)
    lm = load(int8_dir)
    got, cache = lm.prefill(prompt)
    assert np.corrcoef(ref, got)[0, 1] > 0.99
    logits, _ = lm.decode([int(got.argmax())], [cache])
    assert logits.shape == (1, ref.shape[0]) and np.isfinite(logits).all()
