"""Export of Hugging Face Llama, Qwen2 and GPT-2 folders: logits parity through the edge runtime.

Each architecture is a tiny random model saved with ``save_pretrained`` next to a BPE tokenizer
trained here on a few sentences, so nothing is downloaded and each export takes about a second.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from edge_runtime.hf_config import UnsupportedModelError, runtime_config
from edge_runtime.hf_export import export_hf_dir, model_name
from edge_runtime.onnx_lm import OnnxLanguageModel, load
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage

transformers = pytest.importorskip("transformers")

ARCHS = ("llama", "qwen2", "gpt2")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>")
CORPUS = [
    "the cat sat on the mat and looked at the edge router",
    "hello there, how are you today? I am a small model.",
    "switchyard routes chats between the edge and the cloud",
]
# Per architecture: the chat template and where the folder keeps it.
TEMPLATES = {
    "llama": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
    "qwen2": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "gpt2": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}",
}
RENDERED = {
    "llama": "<s>[system] be brief</s>[user] hello there</s>[assistant] ",
    "qwen2": "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n"
    "<|im_start|>assistant\n",
    "gpt2": "system: be brief\nuser: hello there\nassistant:",
}


def train_tokenizer() -> Any:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def hf_config(arch: str, vocab_size: int) -> Any:
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            vocab_size=vocab_size,
        )
    sizes: dict[str, Any] = {
        "vocab_size": vocab_size,
        "bos_token_id": 3,  # ids follow SPECIAL's order
        "hidden_size": 48,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,  # grouped-query attention
        "max_position_embeddings": 64,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**sizes, eos_token_id=4, rope_theta=5000.0, tie_word_embeddings=False)
    return transformers.Qwen2Config(**sizes, eos_token_id=2, tie_word_embeddings=True)


def make_hf_dir(arch: str, root: Path) -> Path:
    """A random model of ``arch`` with a tokenizer, as a Hugging Face hub folder holds it."""
    hf_dir = root / f"tiny-{arch}"
    tok = train_tokenizer()
    torch.manual_seed(7)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(arch, tok.get_vocab_size()))
    with torch.no_grad():
        for p in model.parameters():  # norms and biases too, so that none of them can go missing unseen
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(hf_dir)
    tok_config: dict[str, Any]
    if arch == "gpt2":
        # An older GPT-2 layout: vocabulary and merges only, the template in its own file.
        tok.model.save(str(hf_dir))
        (hf_dir / "chat_template.jinja").write_text(TEMPLATES[arch])
        tok_config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>"}
    else:
        tok.save(str(hf_dir / "tokenizer.json"))
        eos = "</s>" if arch == "llama" else "<|im_end|>"
        tok_config = {"bos_token": "<s>", "eos_token": eos, "chat_template": TEMPLATES[arch]}
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return hf_dir


@dataclass(frozen=True)
class Exported:
    arch: str
    reference: Any  # the transformers model, read back from the folder
    lm: OnnxLanguageModel
    out_dir: Path


@pytest.fixture(scope="module", params=ARCHS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    arch: str = request.param
    root = tmp_path_factory.mktemp(arch)
    hf_dir = make_hf_dir(arch, root)
    out_dir = root / "onnx"
    export_hf_dir(hf_dir, out_dir)
    reference = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    return Exported(arch, reference, load(out_dir, threads=1), out_dir)


def reference_logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits
    out: np.ndarray = logits[0, -1].float().numpy()
    return out


def assert_parity(got: np.ndarray, want: np.ndarray) -> float:
    diff = float(np.abs(got - want).max())
    assert diff < 1e-4, f"max abs diff {diff} (logits up to {np.abs(want).max():.2f})"
    return diff


def test_prefill_and_decode_match_transformers(exported: Exported) -> None:
    model, lm = exported.reference, exported.lm
    a, b = [5, 17, 42, 9, 88, 130, 61], [200, 7]
    logits_a, cache_a = lm.prefill(a)
    logits_b, cache_b = lm.prefill(b)
    diffs = [assert_parity(logits_a, reference_logits(model, a))]
    diffs.append(assert_parity(logits_b, reference_logits(model, b)))
    caches = [cache_a, cache_b]
    for step in range(5):
        nxt = [11 + step, 150 + step]
        logits, caches = lm.decode(nxt, caches)
        a, b = [*a, nxt[0]], [*b, nxt[1]]
        assert logits.shape == (2, lm.config.vocab_size) and logits.dtype == np.float32
        diffs.append(assert_parity(logits[0], reference_logits(model, a)))
        diffs.append(assert_parity(logits[1], reference_logits(model, b)))
    assert [c.length for c in caches] == [len(a), len(b)]
    print(f"{exported.arch}: max abs logits diff {max(diffs):.2e} over prefill + 5 decode steps")


def test_prefill_extends_cache(exported: Exported) -> None:
    _, cache = exported.lm.prefill([1, 2, 3])
    logits, cache = exported.lm.prefill([40, 50, 60], cache)
    assert_parity(logits, reference_logits(exported.reference, [1, 2, 3, 40, 50, 60]))
    assert cache.length == 6


def test_graph_takes_a_left_padded_batch(exported: Exported) -> None:
    # What a batching runtime feeds: sequences of unequal length, left-padded, then a decode step.
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    config = exported.lm.config
    long, short = [4, 8, 15, 16, 23], [42, 7]
    pad = len(long) - len(short)
    feed: dict[str, np.ndarray] = {
        "input_ids": np.array([long, [0] * pad + short]),
        "attention_mask": np.array([[1] * len(long), [0] * pad + [1] * len(short)]),
        "position_ids": np.array([list(range(len(long))), [0] * pad + list(range(len(short)))]),
    }
    empty = np.zeros((2, config.num_key_value_heads, 0, config.head_dim), dtype=np.float32)
    past_names = [
        f"past_key_values.{i}.{kind}" for i in range(config.num_hidden_layers) for kind in ("key", "value")
    ]
    feed.update(dict.fromkeys(past_names, empty))
    logits, *present = session.run(None, feed)
    assert_parity(logits[0, -1], reference_logits(exported.reference, long))
    assert_parity(logits[1, -1], reference_logits(exported.reference, short))
    step = {
        "input_ids": np.array([[99], [98]]),
        "attention_mask": np.concatenate([feed["attention_mask"], np.ones((2, 1), dtype=np.int64)], axis=1),
        "position_ids": np.array([[len(long)], [len(short)]]),
        **dict(zip(past_names, present, strict=True)),
    }
    logits = session.run(["logits"], step)[0]
    assert_parity(logits[0, -1], reference_logits(exported.reference, [*long, 99]))
    assert_parity(logits[1, -1], reference_logits(exported.reference, [*short, 98]))


def test_runtime_config(exported: Exported) -> None:
    config, ref = exported.lm.config, exported.reference.config
    assert config.name == f"tiny-{exported.arch}"
    assert exported.lm.context_window == 64
    assert config.vocab_size == ref.vocab_size and config.num_hidden_layers == 2
    assert config.num_key_value_heads == (4 if exported.arch == "gpt2" else 2)
    assert config.head_dim == 8
    assert config.intermediate_size == (128 if exported.arch == "gpt2" else 64)


def test_chat_template_is_applied(exported: Exported) -> None:
    tokenizer = ChatTokenizer(exported.out_dir)
    chat = [ChatMessage("system", "be brief"), ChatMessage("user", "hello there")]
    assert tokenizer.render(chat) == RENDERED[exported.arch]
    ids = tokenizer.encode_chat(chat)
    # Role markers are the tokenizer's special tokens, one id each, not spelled out in bytes.
    marker = {"llama": "<s>", "qwen2": "<|im_start|>", "gpt2": None}[exported.arch]
    if marker is not None:
        marker_id = Tokenizer.from_file(str(exported.out_dir / "tokenizer.json")).token_to_id(marker)
        assert marker_id is not None and ids.count(marker_id) == (1 if marker == "<s>" else 3)
    assert tokenizer.decode(tokenizer.encode("hello there, how are you?")) == "hello there, how are you?"


def test_command_exports_with_external_data(tmp_path: Path) -> None:
    from switchyard.cli import main

    hf_dir = make_hf_dir("qwen2", tmp_path)
    out_dir = tmp_path / "onnx"
    assert main(["models", "export-onnx", str(hf_dir), str(out_dir), "--external-data"]) == 0
    assert (out_dir / "model.onnx.data").stat().st_size > (out_dir / "model.onnx").stat().st_size
    reference = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    logits, _ = load(out_dir, threads=1).prefill([9, 8, 7])
    assert_parity(logits, reference_logits(reference, [9, 8, 7]))


BASE_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "eos_token_id": [7, 8],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "mistral"}, "model_type='mistral' is not supported"),
        ({"head_dim": 32}, "head_dim=32 differs"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type='dynamic'"),
        ({"model_type": "qwen2", "use_sliding_window": True}, "sliding-window"),
        ({"model_type": "qwen2", "layer_types": ["full_attention", "sliding_attention"]}, "sliding-window"),
    ],
)
def test_unsupported_configs_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        runtime_config({**BASE_LLAMA, **change}, name="m", source="config.json")


def test_config_mapping() -> None:
    llama = runtime_config({**BASE_LLAMA, "rope_scaling": {"rope_type": "llama3"}}, name="m", source="c")
    assert llama["num_key_value_heads"] == 4 and llama["max_position_embeddings"] == 2048
    assert llama["eos_token_id"] == 7  # the first of a list
    gpt2 = runtime_config(
        {"model_type": "gpt2", "vocab_size": 50, "n_embd": 16, "n_layer": 3, "n_head": 2, "n_positions": 32},
        name="g",
        source="c",
    )
    mapped = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_key_value_heads")
    assert [gpt2[k] for k in mapped] == [16, 3, 64, 2]
    assert gpt2["switchyard_name"] == "g" and gpt2["tie_word_embeddings"] is True


def test_model_name(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert model_name(snapshot) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model_name(tmp_path / "SmolLM2-360M-Instruct") == "SmolLM2-360M-Instruct"


def test_int8_export_of_each_architecture(exported: Exported, tmp_path: Path) -> None:
    """The calibrated int8 graph of a real model's export: made from its own chat template, close to fp32."""
    from edge_runtime.quantize import quantize_int8

    folder = tmp_path / "int8"
    shutil.copytree(exported.out_dir, folder)
    quantize_int8(folder)
    int8 = load(folder, threads=1, precision="int8")
    ids = [5, 17, 42, 9, 88, 130, 61]
    got, cache = int8.prefill(ids)
    want, _ = exported.lm.prefill(ids)
    assert np.corrcoef(got, want)[0, 1] > 0.98
    logits, _ = int8.decode([int(got.argmax())], [cache])
    assert np.isfinite(logits).all()


def test_command_int8_with_external_data(tmp_path: Path) -> None:
    from switchyard.cli import main

    hf_dir = make_hf_dir("llama", tmp_path)
    out_dir = tmp_path / "onnx"
    assert main(["models", "export-onnx", str(hf_dir), str(out_dir), "--external-data", "--int8"]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert {"model.onnx", "model.onnx.data", "model.int8.onnx"} <= set(names)
    assert load(out_dir, threads=1).graph_file == "model.int8.onnx"
    logits, _ = load(out_dir, threads=1).prefill([9, 8, 7])
    fp32, _ = load(out_dir, threads=1, precision="fp32").prefill([9, 8, 7])
    assert np.corrcoef(logits, fp32)[0, 1] > 0.98
