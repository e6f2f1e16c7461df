"""The calibrated int8 graph: written beside the fp32 one, close to it, batch-invariant, chosen on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edge_runtime.onnx_lm import OnnxLanguageModel, choose_graph, load, runs_on_cuda
from edge_runtime.precision import INT8_NAME
from edge_runtime.quantize import quantize_int8


@pytest.fixture(scope="module")
def int8_dir(demo_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edge-int8")
    for f in demo_models.edge.iterdir():
        if f.name != INT8_NAME:  # quantize afresh here, whatever the build shipped
            shutil.copy(f, folder / f.name)
    quantize_int8(folder)
    return folder


def test_int8_graph_sits_beside_the_fp32_one_and_tracks_it(demo_models: Any, int8_dir: Path) -> None:
    fp32_bytes = (demo_models.edge / "model.onnx").read_bytes()
    assert (int8_dir / "model.onnx").read_bytes() == fp32_bytes  # the GPU graph is left as it was
    ops = [node.op_type for node in onnx.load(str(int8_dir / INT8_NAME)).graph.node]
    assert "QLinearMatMul" in ops
    assert "MatMul" in ops  # the attention's products of two activations stay fp32
    prompt = list(range(10, 40))
    ref, _ = load(int8_dir, precision="fp32").prefill(prompt)
    lm = load(int8_dir, precision="int8")
    got, cache = lm.prefill(prompt)
    assert np.corrcoef(ref, got)[0, 1] > 0.99
    logits, _ = lm.decode([int(got.argmax())], [cache])
    assert logits.shape == (1, ref.shape[0]) and np.isfinite(logits).all()


def _greedy(lm: OnnxLanguageModel, prompts: list[list[int]], steps: int) -> tuple[list[list[int]], list[Any]]:
    logits, caches = lm.prefill_batch(prompts, [None] * len(prompts))
    tokens = [[int(row.argmax())] for row in logits]
    seen = [logits]
    for _ in range(steps):
        logits, caches = lm.decode([t[-1] for t in tokens], caches)
        seen.append(logits)
        for t, row in zip(tokens, logits, strict=True):
            t.append(int(row.argmax()))
    return tokens, seen


def test_int8_batched_greedy_is_exactly_solo(int8_dir: Path) -> None:
    """Static activation scales: a row's numbers cannot depend on the rows beside it."""
    lm = load(int8_dir, precision="int8")
    prompts = [list(range(5, 5 + n)) for n in (3, 17, 9, 30)]
    batched, batched_logits = _greedy(lm, prompts, 12)
    for i, prompt in enumerate(prompts):
        solo, solo_logits = _greedy(lm, [prompt], 12)
        assert solo[0] == batched[i]
        for a, b in zip(solo_logits, batched_logits, strict=True):
            assert np.array_equal(a[0], b[i])


def test_precision_chooses_the_graph(int8_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_graph(int8_dir, "auto", cuda=False).name == INT8_NAME
    assert choose_graph(int8_dir, "fp32", cuda=False).name == "model.onnx"
    assert load(int8_dir).graph_file == INT8_NAME  # no CUDA here: auto takes the int8 graph
    fp32_only = tmp_path / "fp32-only"
    fp32_only.mkdir()
    for f in int8_dir.iterdir():
        if f.name != INT8_NAME:
            shutil.copy(f, fp32_only / f.name)
    assert choose_graph(fp32_only, "auto").name == "model.onnx"
    with pytest.raises(FileNotFoundError, match="export-onnx --int8"):
        choose_graph(fp32_only, "int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_graph(int8_dir, "int4")
    # Where CUDA runs, auto keeps the float graph for it (the int8 one is for CPU nodes).
    monkeypatch.setattr("edge_runtime.onnx_lm.cuda_available", lambda: True)
    assert choose_graph(int8_dir, "auto").name == "model.onnx"
    assert choose_graph(int8_dir, "auto", cuda=False).name == INT8_NAME
    assert choose_graph(int8_dir, "int8").name == INT8_NAME
    assert not runs_on_cuda(int8_dir / INT8_NAME)  # chosen by hand, int8 still runs on the CPU
    assert runs_on_cuda(int8_dir / "model.onnx") and not runs_on_cuda(int8_dir / "model.onnx", cuda=False)


def test_recording_inputs_sees_whole_feeds_only_inside_the_block(int8_dir: Path) -> None:
    lm = load(int8_dir, precision="fp32")
    with lm.recording_inputs() as seen:
        _, cache = lm.prefill([3, 4, 5])
        lm.decode([6], [cache])
    names = {i.name for i in onnx.load(str(int8_dir / "model.onnx")).graph.input}
    assert len(seen) == 2 and all(set(feed) == names for feed in seen)
    assert seen[1]["input_ids"].tolist() == [[6]]
    lm.prefill([7, 8])
    assert len(seen) == 2
