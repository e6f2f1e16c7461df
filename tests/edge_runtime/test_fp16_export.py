"""``export_onnx(..., fp16=True)``: a half-precision graph and cache from an fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cloud_backend.llama import config_to_dict
from edge_runtime.export import export_onnx
from edge_runtime.kv_block import OnnxKVCache
from edge_runtime.onnx_lm import load
from tests.edge_runtime.tiny_model import random_llama, torch_last_logits


def test_fp16_option_converts_a_copy(tmp_path: Path) -> None:
    model = random_llama()
    export_onnx(model, tmp_path / "model.onnx", fp16=True)
    (tmp_path / "config.json").write_text(json.dumps(config_to_dict(model.config)))
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    lm = load(tmp_path, threads=1)
    assert lm.kv_bytes_per_token == 2 * 2 * 2 * 8 * 2
    ids = [3, 1, 4, 1, 5]
    logits, caches = lm.prefill_batch([ids, [9, 2]], [None, None])
    assert isinstance(caches[0], OnnxKVCache) and caches[0].layers[0][0].dtype == np.float16
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits[0], torch_last_logits(model, ids).numpy(), atol=5e-2, rtol=5e-2)
    logits, _ = lm.decode([7, 8], caches)
    np.testing.assert_allclose(logits[0], torch_last_logits(model, [*ids, 7]).numpy(), atol=5e-2, rtol=5e-2)
