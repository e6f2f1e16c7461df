"""Export a Hugging Face causal LM folder (Llama, Qwen2, GPT-2) to the edge runtime's ONNX folder.

The model is loaded with transformers itself, so every variant it runs (biases, rotary scaling,
tied embeddings, GPT-2's learned positions) is exported by the code that defines it. A thin wrapper
gives it Optimum's flat signature: the past arrives as ``past_key_values.{i}.key|value`` tensors and
is handed to the model as a ``DynamicCache``, whose layers, after the forward, hold
``present.{i}.key|value``. The wrapper also turns the 2-D ``attention_mask`` into the additive 4-D
mask the model's eager attention accepts as is, so no mask shortcut of transformers (which may drop
an all-ones mask) is frozen into the trace.

The folder gets ``model.onnx`` (weights beside it in ``model.onnx.data`` when they pass the 2 GB
protobuf limit), a ``config.json`` the runtime reads, and the tokenizer with its chat template.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cloud_backend.llama import attention_bias
from edge_runtime.export import ONNX_NAME, io_names, trace_to_onnx
from edge_runtime.hf_config import runtime_config
from edge_runtime.tokenizer_files import copy_tokenizer
from switchyard.lm import ModelConfig

EXTERNAL_DATA_NAME = "model.onnx.data"
# Protobuf refuses messages over 2 GiB; stay clear of it with the graph itself on top of the weights.
_INLINE_LIMIT_BYTES = 1_800_000_000


class _OptimumCausalLM(nn.Module):
    """``(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` over an HF model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers 5 renamed the forward's ``past_key_values`` to ``cache``.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *past_flat: Tensor
    ) -> tuple[Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache([(past_flat[i], past_flat[i + 1]) for i in range(0, len(past_flat), 2)])
        batch, query_len = input_ids.shape[0], input_ids.shape[1]
        mask = attention_bias(batch, query_len, past_flat[0].shape[2], attention_mask, input_ids.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,  # the last position's logits alone, as the runtime reads them
            **{self._cache_arg: cache},
        )
        layers: list[Any] = list(cache.layers)
        return (out.logits, *(t for layer in layers for t in (layer.keys, layer.values)))


def model_name(hf_dir: Path) -> str:
    """The name a node reports: the folder's, or ``org/name`` for a Hugging Face cache snapshot."""
    resolved = hf_dir.resolve()
    repo = resolved.parent.parent.name
    if resolved.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.removeprefix("models--").replace("--", "/")
    return resolved.name


def load_hf_causal_lm(hf_dir: Path) -> nn.Module:
    """The folder's model in fp32 with eager attention (which takes our additive mask), eval mode."""
    from transformers import AutoModelForCausalLM

    model: nn.Module = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    return model.eval()


def export_hf_dir(hf_dir: Path, out_dir: Path, *, opset: int = 17, external_data: bool | None = None) -> Path:
    """Export ``hf_dir`` into ``out_dir``; returns the path of ``model.onnx``.

    ``external_data`` keeps the weights in ``model.onnx.data``; by default only when they are too
    large for one protobuf file.
    """
    config_path = hf_dir / "config.json"
    raw: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    body = runtime_config(raw, name=model_name(hf_dir), source=str(config_path))
    config = ModelConfig.from_dict(body)
    model = load_hf_causal_lm(hf_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_NAME
    _export(model, config, path, opset=opset, external_data=external_data)
    check_zero_past(path, model, config)
    (out_dir / "config.json").write_text(json.dumps(body, indent=2) + "\n")
    copy_tokenizer(hf_dir, out_dir)
    return path


def _export(
    model: nn.Module, config: ModelConfig, path: Path, *, opset: int, external_data: bool | None
) -> None:
    # torch writes large models as one file per tensor; trace into scratch, then lay the folder out.
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        traced = Path(scratch) / ONNX_NAME
        trace_to_onnx(_OptimumCausalLM(model), config, traced, opset=opset)
        _relocate(traced, path, external_data)


def _relocate(traced: Path, path: Path, external_data: bool | None) -> None:
    import onnx

    if external_data is None:
        # torch already split the weights off when they were too big; count every file it wrote.
        external_data = sum(f.stat().st_size for f in traced.parent.iterdir()) > _INLINE_LIMIT_BYTES
    proto = onnx.load(str(traced), load_external_data=True)
    for stale in (path, path.parent / EXTERNAL_DATA_NAME):
        stale.unlink(missing_ok=True)
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=external_data,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_NAME,
    )


def check_zero_past(path: Path, model: nn.Module, config: ModelConfig) -> float:
    """Run the graph on a few tokens with an empty past; raise if it disagrees with torch.

    Returns the largest absolute difference of the logits.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 2, 3]], dtype=np.int64) % config.vocab_size
    feed: dict[str, np.ndarray] = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
    }
    empty = np.zeros((1, config.num_key_value_heads, 0, config.head_dim), dtype=np.float32)
    for name in io_names(config.num_hidden_layers)[0][3:]:
        feed[name] = empty
    got = np.asarray(session.run(["logits"], feed)[0], dtype=np.float32)
    with torch.inference_mode():
        expected = model(input_ids=torch.from_numpy(ids)).logits.float().numpy()
    diff = float(np.abs(got - expected[:, -1:]).max())
    # Relative to the logits' scale: a real model's logits run to tens, a random one's to tenths.
    if diff > 1e-3 * max(1.0, float(np.abs(expected).max())):
        raise RuntimeError(f"{path}: ONNX logits with an empty past differ from torch by {diff}")
    return diff
