"""A Llama-architecture decoder in torch, with Hugging Face ``LlamaForCausalLM`` parameter names.

RMSNorm, rotary position embeddings, a SwiGLU MLP and grouped-query attention. Qwen2 is the same
decoder with biases on the q/k/v projections; an ``Architecture`` value says which variant a folder
holds. Attention and MLP take their per-rank sizes (heads, kv heads, hidden units) as parameters so
that a tensor-parallel wrapper (``cloud_backend.tp_model``) can build a slice of each layer and close
the split with an all-reduce; on one device the all-reduce is the identity.

Weights load from and save to a Hugging Face-style folder: ``config.json`` plus ``model.safetensors``
or sharded ``model-0000x-of-0000y.safetensors`` files listed in ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from switchyard.lm import ModelConfig

# Keys and values of one layer, each ``[batch, n_kv_heads, length, head_dim]``.
LayerKV = tuple[Tensor, Tensor]
# Sums a partial result over tensor-parallel ranks; the identity on one device.
AllReduce = Callable[[Tensor], Tensor]

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"


@dataclass(frozen=True, slots=True)
class Architecture:
    """What tells the supported Llama-family variants apart; parameter names stay Hugging Face's."""

    model_type: Literal["llama", "qwen2"] = "llama"
    qkv_bias: bool = False  # biases on q_proj, k_proj and v_proj
    o_bias: bool = False  # a bias on o_proj (Llama's attention_bias sets both)


LLAMA = Architecture()
QWEN2 = Architecture("qwen2", qkv_bias=True)


def architecture_from_dict(raw: dict[str, Any], source: str = CONFIG_NAME) -> Architecture:
    """The variant a ``config.json`` body describes, keyed by ``model_type`` (else ``architectures``)."""
    model_type = raw.get("model_type")
    if model_type is None:
        archs = raw.get("architectures") or ["LlamaForCausalLM"]
        model_type = (
            "qwen2"
            if archs[0] == "Qwen2ForCausalLM"
            else "llama"
            if archs[0] == "LlamaForCausalLM"
            else archs[0]
        )
    if model_type == "qwen2":
        layer_types = raw.get("layer_types") or []
        if raw.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
            raise ValueError(f"{source}: Qwen2 sliding-window attention is not supported")
        return QWEN2
    if model_type == "llama":
        bias = bool(raw.get("attention_bias", False))
        return Architecture("llama", qkv_bias=bias, o_bias=bias)
    raise ValueError(f"{source}: model_type={model_type!r} is not supported (only 'llama' and 'qwen2')")


def _identity(x: Tensor) -> Tensor:
    return x


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 as Hugging Face does, so fp16 weights give the same numbers.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(
    position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotary embedding, each ``[batch, seq, head_dim]``."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = position_ids.float()[:, :, None] * inv_freq[None, None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [batch, heads, seq, head_dim]; cos/sin: [batch, seq, head_dim].
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class LlamaAttention(nn.Module):
    """Grouped-query attention over ``num_heads`` query heads and ``num_kv_heads`` kv heads of this rank.

    Column-parallel q/k/v (split by heads), row-parallel o (split by input features): each rank's
    ``o_proj`` gives a partial sum that ``all_reduce`` completes.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        all_reduce: AllReduce | None = None,
        *,
        qkv_bias: bool = False,
        o_bias: bool = False,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        # Tensor parallel: only one rank may hold the real o_proj bias, or the all-reduce adds it N times.
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=o_bias)
        self.all_reduce = all_reduce or _identity

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor, past: LayerKV | None
    ) -> tuple[Tensor, LayerKV]:
        b, t = x.shape[0], x.shape[1]
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = _apply_rotary(q, cos, sin)
        k = _apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        present = (k, v)
        # Grouped-query attention without repeating keys and values per query head: the query heads
        # that share a kv head ride along the query axis (head h = kv head h // groups), so one matmul
        # per kv head covers them and the cache is never copied to the query heads' count.
        groups = self.num_heads // self.num_kv_heads
        total = k.shape[2]
        q = q.reshape(b, self.num_kv_heads, groups * t, self.head_dim)
        scores = (q @ k.transpose(2, 3)).view(b, self.num_heads, t, total) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.softmax(scores.float() + bias, dim=-1).to(q.dtype)
        grouped = probs.view(b, self.num_kv_heads, groups * t, total) @ v
        out = grouped.view(b, self.num_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, -1)
        # Tensor parallel: all-reduce closes the head split here.
        return self.all_reduce(self.o_proj(out)), present


class LlamaMLP(nn.Module):
    """SwiGLU over ``intermediate_size`` hidden units of this rank; gate/up column-, down row-parallel."""

    def __init__(self, hidden_size: int, intermediate_size: int, all_reduce: AllReduce | None = None) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.all_reduce = all_reduce or _identity

    def forward(self, x: Tensor) -> Tensor:
        partial = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        # Tensor parallel: all-reduce closes the hidden-unit split here.
        return self.all_reduce(partial)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, self_attn: LlamaAttention, mlp: LlamaMLP) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor, past: LayerKV | None
    ) -> tuple[Tensor, LayerKV]:
        attn, present = self.self_attn(self.input_layernorm(x), cos, sin, bias, past)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, present


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, layers: list[LlamaDecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


def attention_bias(
    batch: int, query_len: int, past_len: int, attention_mask: Tensor | None, device: torch.device
) -> Tensor:
    """Additive fp32 mask ``[batch or 1, 1, query_len, past_len + query_len]``: causal and padding.

    ``attention_mask`` is Hugging Face's ``[batch, past_len + query_len]`` of ones (attend) and zeros.
    A large negative number rather than -inf keeps fully masked rows (left padding) free of NaN.
    """
    total = past_len + query_len
    key_index = torch.arange(total, device=device)
    query_index = torch.arange(query_len, device=device) + past_len
    allowed = (key_index[None, :] <= query_index[:, None])[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :].bool()
    zero = torch.zeros((), dtype=torch.float32, device=device)
    neg = torch.full((), torch.finfo(torch.float32).min, dtype=torch.float32, device=device)
    return torch.where(allowed, zero, neg)[:, None]


def run_layers(
    layers: nn.ModuleList,
    config: ModelConfig,
    x: Tensor,
    position_ids: Tensor,
    attention_mask: Tensor | None,
    past_key_values: list[LayerKV] | None,
) -> tuple[Tensor, list[LayerKV]]:
    """The decoder layers over the embeddings ``x``: hidden states before the final norm, and each
    layer's keys/values including the new positions (the whole model's, or one rank's shard)."""
    b, t = x.shape[0], x.shape[1]
    past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
    cos, sin = rotary_cos_sin(position_ids, config.head_dim, config.rope_theta, x.dtype)
    bias = attention_bias(b, t, past_len, attention_mask, x.device)
    presents: list[LayerKV] = []
    for i, layer in enumerate(layers):
        past = None if past_key_values is None else past_key_values[i]
        x, present = layer(x, cos, sin, bias, past)
        presents.append(present)
    return x, presents


class LlamaForCausalLM(nn.Module):
    """The full decoder; ``state_dict()`` keys match Hugging Face ``LlamaForCausalLM`` (or Qwen2's)."""

    def __init__(self, config: ModelConfig, arch: Architecture = LLAMA) -> None:
        super().__init__()
        self.config = config
        self.arch = arch
        layers = [
            LlamaDecoderLayer(
                config,
                LlamaAttention(
                    config.hidden_size,
                    config.num_attention_heads,
                    config.num_key_value_heads,
                    config.head_dim,
                    qkv_bias=arch.qkv_bias,
                    o_bias=arch.o_bias,
                ),
                LlamaMLP(config.hidden_size, config.intermediate_size),
            )
            for _ in range(config.num_hidden_layers)
        ]
        self.model = LlamaModel(config, layers)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values: list[LayerKV] | None = None,
        *,
        last_only: bool = False,
    ) -> tuple[Tensor, list[LayerKV]]:
        """Logits ``[batch, seq, vocab]`` and each layer's keys/values including ``input_ids``.

        ``past_key_values`` holds one ``(k, v)`` per layer, each ``[batch, n_kv_heads, past, head_dim]``.
        With ``last_only`` the logits are the last position's alone, ``[batch, 1, vocab]``: generation
        needs no others, and over a long prompt the vocabulary projection is most of the work.
        """
        x = self.model.embed_tokens(input_ids)
        x, presents = run_layers(
            self.model.layers, self.config, x, position_ids, attention_mask, past_key_values
        )
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(self.model.norm(x))
        return logits, presents


def read_config(model_dir: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The parsed config and the raw ``config.json``; rejects Llama variants this module can't run."""
    path = model_dir / CONFIG_NAME
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    # transformers 5 moved rope_theta into rope_parameters; older files carry rope_scaling.
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{path}: rope_type={rope_type!r} is not supported (only 'default')")
    if "rope_theta" not in raw and "rope_theta" in rope:
        raw = {**raw, "rope_theta": rope["rope_theta"]}
    if raw.get("mlp_bias"):
        raise ValueError(f"{path}: mlp_bias=true is not supported")
    architecture_from_dict(raw, str(path))
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act={raw['hidden_act']!r} is not supported (only 'silu')")
    config = ModelConfig.from_dict(raw)
    head_dim = raw.get("head_dim")
    if head_dim is not None and int(head_dim) != config.head_dim:
        raise ValueError(f"{path}: head_dim={head_dim} differs from hidden_size / num_attention_heads")
    return config, raw


def _read_state_dict(model_dir: Path) -> dict[str, Tensor]:
    single = model_dir / SAFETENSORS_NAME
    if single.exists():
        return load_file(single)
    index_path = model_dir / SAFETENSORS_INDEX_NAME
    if not index_path.exists():
        raise FileNotFoundError(f"{model_dir}: neither {SAFETENSORS_NAME} nor {SAFETENSORS_INDEX_NAME}")
    weight_map: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(load_file(model_dir / shard))
    return state


def load_llama(
    model_dir: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LlamaForCausalLM:
    """Load a Hugging Face Llama folder, in eval mode on ``device`` as ``dtype``."""
    config, raw = read_config(model_dir)
    state = _read_state_dict(model_dir)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    # Build on the meta device so that no time goes into random weights that are overwritten anyway.
    with torch.device("meta"):
        model = LlamaForCausalLM(config, architecture_from_dict(raw))
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"{model_dir}: missing weights {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=dtype).eval()


def config_to_dict(
    config: ModelConfig, dtype: torch.dtype = torch.float32, arch: Architecture = LLAMA
) -> dict[str, Any]:
    """A Hugging Face ``LlamaConfig``- (or ``Qwen2Config``-) compatible ``config.json`` body."""
    if arch.model_type == "qwen2":
        variant: dict[str, Any] = {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "use_sliding_window": False,
        }
    else:
        variant = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": arch.qkv_bias,
            "mlp_bias": False,
        }
    return {
        **variant,
        "hidden_act": "silu",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
        "switchyard_name": config.name,
    }


def save_llama(
    model: LlamaForCausalLM,
    out_dir: Path,
    *,
    extra_config: Mapping[str, Any] | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Write ``config.json`` and safetensors weights; shards when the weights exceed ``max_shard_bytes``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    dtype = next(iter(state.values())).dtype
    body = {**config_to_dict(model.config, dtype, model.arch), **(extra_config or {})}
    metadata = {"format": "pt"}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, out_dir / SAFETENSORS_NAME, metadata=metadata)
    else:
        shards: list[dict[str, Tensor]] = [{}]
        size = 0
        for key, value in state.items():
            nbytes = value.numel() * value.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][key] = value
            size += nbytes
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, out_dir / name, metadata=metadata)
            weight_map.update(dict.fromkeys(shard, name))
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / SAFETENSORS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out_dir / CONFIG_NAME).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
