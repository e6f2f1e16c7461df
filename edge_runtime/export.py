"""Export a ``cloud_backend.llama`` model to ONNX in Hugging Face Optimum's decoder layout.

Inputs ``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key|value``;
outputs ``logits`` and ``present.{i}.key|value``. Batch, sequence and past length are dynamic. The
logits are the last position's alone (``[batch, 1, vocab]``), all that generation reads: over a prompt
the vocabulary projection of every position would be most of the prefill's work. The
graph is traced with a non-empty dummy past so that no shape is specialised to zero, and
``check_zero_past`` confirms that onnxruntime accepts the zero-length past of a first call.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cloud_backend.llama import LlamaForCausalLM
from switchyard.lm import ModelConfig

ONNX_NAME = "model.onnx"


class _OptimumSignature(nn.Module):
    """Flattens the decoder's per-layer ``(k, v)`` pairs into Optimum's positional inputs/outputs."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *past_flat: Tensor
    ) -> tuple[Tensor, ...]:
        past = [(past_flat[i], past_flat[i + 1]) for i in range(0, len(past_flat), 2)]
        logits, presents = self.model(input_ids, position_ids, attention_mask, past, last_only=True)
        return (logits, *(t for kv in presents for t in kv))


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the exported graph, in order."""
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(num_layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def trace_signature(
    config: ModelConfig, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> tuple[tuple[torch.Tensor, ...], list[str], list[str], dict[str, dict[int, str]]]:
    """Sample inputs, names and dynamic axes for tracing a decoder into the Optimum layout.

    The sample has a non-empty past (batch 2, 3 new tokens after 4 cached) so that no shape is
    specialised to zero or one; exporters check the zero-past case separately.
    """
    batch, seq, past_len = 2, 3, 4
    kv_shape = (batch, config.num_key_value_heads, past_len, config.head_dim)
    input_ids = torch.zeros((batch, seq), dtype=torch.long, device=device)
    attention_mask = torch.ones((batch, past_len + seq), dtype=torch.long, device=device)
    position_ids = torch.arange(past_len, past_len + seq, device=device).expand(batch, -1)
    past = [torch.zeros(kv_shape, dtype=dtype, device=device)] * (2 * config.num_hidden_layers)
    inputs, outputs = io_names(config.num_hidden_layers)
    dynamic_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size"},  # the last position's only: [batch, 1, vocab]
    }
    for name in inputs[3:]:
        dynamic_axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        dynamic_axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    return (input_ids, attention_mask, position_ids, *past), inputs, outputs, dynamic_axes


def trace_to_onnx(
    wrapper: nn.Module,
    config: ModelConfig,
    path: Path,
    *,
    opset: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> None:
    """Trace ``wrapper`` (a decoder behind Optimum's flat signature) into ``path``.

    The TorchScript exporter is deprecated but handles the dynamic past length without fuss. The
    wrapper is traced in eval mode: export restores the mode afterwards, and a new module starts in
    training mode, which would leave a wrapped model's dropout on from then on.
    """
    sample, inputs, outputs, dynamic_axes = trace_signature(config, dtype=dtype, device=device)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # A cache that starts each layer from an empty constant tensor (transformers' DynamicCache)
        # makes the trace warn; the concatenation with the past makes it harmless.
        warnings.filterwarnings("ignore", message="torch.tensor results are registered as constants")
        torch.onnx.export(
            wrapper.eval(),
            sample,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(
    model: LlamaForCausalLM, path: Path, *, opset: int = 17, check: bool = True, fp16: bool = False
) -> Path:
    """Write ``model`` to ``path`` as ONNX; with ``check``, also run it once with an empty past.

    With ``fp16`` the graph's weights, activations and KV cache are half precision (a copy of the
    model is converted; ``model`` is left as it is): half the memory and bandwidth on a GPU, where
    the CUDA provider runs it. The attention softmax stays in fp32 inside the graph.
    """
    if fp16 and next(model.parameters()).dtype != torch.float16:
        model = copy.deepcopy(model).half()
    config = model.config
    model = model.eval()
    param = next(model.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    trace_to_onnx(_OptimumSignature(model), config, path, opset=opset, dtype=param.dtype, device=param.device)
    if check:
        check_zero_past(path, model)
    return path


def check_zero_past(path: Path, model: LlamaForCausalLM) -> None:
    """Run the exported graph on two tokens with an empty past; raise if it fails or disagrees."""
    import onnxruntime as ort

    config = model.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    param = next(model.parameters())
    np_dtype = np.float16 if param.dtype == torch.float16 else np.float32
    ids = np.array([[1, 2]], dtype=np.int64)
    feed: dict[str, np.ndarray] = {
        "input_ids": ids,
        "attention_mask": np.ones((1, 2), dtype=np.int64),
        "position_ids": np.arange(2, dtype=np.int64)[None],
    }
    empty = np.zeros((1, config.num_key_value_heads, 0, config.head_dim), dtype=np_dtype)
    for name in io_names(config.num_hidden_layers)[0][3:]:
        feed[name] = empty
    got = np.asarray(session.run(["logits"], feed)[0], dtype=np.float32)
    with torch.inference_mode():
        expected, _ = model(
            torch.from_numpy(ids).to(param.device), torch.arange(2, device=param.device)[None]
        )
    diff = float(np.abs(got - expected[:, -1:].float().cpu().numpy()).max())
    tolerance = 1e-2 if np_dtype == np.float16 else 1e-3
    if diff > tolerance:
        raise RuntimeError(f"{path}: ONNX logits with an empty past differ from torch by {diff}")
