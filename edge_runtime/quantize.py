"""int8 for CPU edge boxes: static quantization of an exported model's weight matrices.

``quantize_int8`` writes ``model.int8.onnx`` beside the fp32 ``model.onnx`` of an edge model folder.
Every MatMul with a weight matrix becomes a ``QLinearMatMul``: int8 weights (one scale per matrix)
times uint8 activations at scales calibrated once, here, by running the fp32 model on a few chats
and recording each graph input it saw (min/max of every activation). The attention's own products
(queries by keys, weights by values) stay fp32.

Because the activation scales are constants of the graph, a row of a batch is quantized the same
way whatever the other rows hold: batched greedy output stays exactly solo output. (onnxruntime's
dynamic quantization picks one scale per batch at run time, so a row's rounding there depends on its
neighbours, and batched replies drift from solo ones.) On a CPU with VNNI the int8 products make a
decode step cheaper, most of all in batches: the demo edge model's step at batch 8 and a 64-token
past takes 0.22 ms against 0.27 ms in fp32, batch 1 0.13 against 0.15 ms. The CUDA provider runs
such graphs poorly, which is why the fp32 graph stays beside it: ``onnx_lm.load`` picks the int8
graph on the CPU and the fp32 one under CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_runtime.export import ONNX_NAME
from edge_runtime.precision import INT8_NAME

# Chats the calibration runs: short and long, questions and instructions, so that the recorded
# activations span what a chat model meets. Only their ranges are kept.
CALIBRATION_PROMPTS = (
    "Hello!",
    "What is a queue?",
    "Why is the sky blue?",
    "Tell me about rivers and how they shape the land around them.",
    "Explain recursion to a beginner, with an example of a function that calls itself.",
    "Write a short note on the history of the printing press and why it mattered.",
    "List three uses of a hash table and say what makes each one fast.",
    "Summarise this: the module provides functions for reading and writing files in several "
    "formats. Each function returns a new object and never changes its arguments. When an error "
    "occurs, an exception is raised that names the file and the line where the problem was found.",
)


def quantize_int8(model_dir: Path, *, reply_tokens: int = 24, every: int = 3) -> Path:
    """Write ``model_dir/model.int8.onnx`` from ``model_dir/model.onnx``; returns its path.

    Calibration: each of ``CALIBRATION_PROMPTS`` is prefilled and answered greedily for
    ``reply_tokens`` tokens by the fp32 model on the CPU; the prefill and every ``every``-th decode
    step are the calibration inputs.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    feeds = calibration_feeds(model_dir, reply_tokens=reply_tokens, every=every)
    source = model_dir / ONNX_NAME
    external = (model_dir / (ONNX_NAME + ".data")).exists()
    with tempfile.TemporaryDirectory(dir=model_dir) as scratch, _quiet_preprocess_hint():
        out = Path(scratch) / INT8_NAME
        quantize_static(
            str(source),
            str(out),
            _Feeds(feeds),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=_activation_products(source),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=external,
        )
        for f in Path(scratch).iterdir():  # the graph, and its weights file when it has one
            if f.name.startswith(INT8_NAME):
                os.replace(f, model_dir / f.name)
    return model_dir / INT8_NAME


def calibration_feeds(model_dir: Path, *, reply_tokens: int, every: int) -> list[dict[str, Any]]:
    """The fp32 graph's inputs while it answers ``CALIBRATION_PROMPTS`` (see ``quantize_int8``)."""
    from edge_runtime.onnx_lm import load
    from switchyard.tokenizer import ChatTokenizer
    from switchyard.wire import ChatMessage

    lm = load(model_dir, cuda=False, precision="fp32")
    tokenizer = ChatTokenizer(model_dir)
    feeds: list[dict[str, Any]] = []
    for prompt in CALIBRATION_PROMPTS:
        ids = tokenizer.encode_chat([ChatMessage("user", prompt)])[: lm.context_window - reply_tokens]
        with lm.recording_inputs() as seen:
            last, cache = lm.prefill(ids)
        feeds += seen
        token = int(np.argmax(last))
        for step in range(reply_tokens):
            with lm.recording_inputs() as seen:
                logits, (cache,) = lm.decode([token], [cache])
            if step % every == 0:
                feeds += seen
            token = int(np.argmax(logits[0]))
    return feeds


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """onnxruntime logs a hint to run its shape pre-processing (for vision models) on the root logger."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _activation_products(path: Path) -> list[str]:
    """MatMul nodes with no weight among their inputs: attention scores and weighted values."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


class _Feeds(CalibrationDataReader):  # type: ignore[misc]
    """The recorded feeds, one by one, for onnxruntime's calibration."""

    def __init__(self, feeds: Sequence[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)
