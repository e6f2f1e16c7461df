"""Which graph of an edge model folder a node runs: the names, light enough for the CLI to import.

A folder holds ``model.onnx`` (fp32, or fp16 when exported so) and may hold ``model.int8.onnx``
(``edge_runtime.quantize``). ``edge_runtime.onnx_lm.choose_graph`` applies the choice.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "int8")
INT8_NAME = "model.int8.onnx"
