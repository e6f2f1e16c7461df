from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from switchyard.modelbuild.build import CLOUD_NAME, EDGE_NAME, ModelPaths, ensure_models
from switchyard.modelbuild.chat_template import render_chat
from switchyard.modelbuild.corpus import build_corpus, clean
from switchyard.modelbuild.train import format_documents


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelPaths]:
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, ensure_models(data_dir, quick=True, progress=False)


def test_quick_build_writes_both_models(built: tuple[Path, ModelPaths]) -> None:
    _, paths = built
    assert sorted(p.name for p in paths.edge.iterdir()) == [
        "config.json",
        "model.int8.onnx",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (paths.cloud / "model.safetensors").is_file()
    edge_config = json.loads((paths.edge / "config.json").read_text())
    cloud_config = json.loads((paths.cloud / "config.json").read_text())
    assert edge_config["switchyard_name"] == EDGE_NAME and edge_config["max_position_embeddings"] == 1024
    assert cloud_config["switchyard_name"] == CLOUD_NAME and cloud_config["max_position_embeddings"] == 2048
    assert (edge_config["bos_token_id"], edge_config["eos_token_id"]) == (0, 1)


def test_second_call_is_cached(built: tuple[Path, ModelPaths]) -> None:
    data_dir, paths = built
    stamp = (paths.edge / "model.onnx").stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_models(data_dir, quick=True, progress=False) == paths
    assert time.perf_counter() - started < 0.5
    assert (paths.edge / "model.onnx").stat().st_mtime_ns == stamp


def test_both_runtimes_load_and_agree_on_the_tokenizer(built: tuple[Path, ModelPaths]) -> None:
    from cloud_backend.torch_lm import load as load_torch
    from edge_runtime.onnx_lm import load as load_onnx
    from switchyard.tokenizer import ChatTokenizer
    from switchyard.wire import ChatMessage

    _, paths = built
    for folder, lm in (
        (paths.edge, load_onnx(paths.edge, threads=1)),
        (paths.cloud, load_torch(paths.cloud)),
    ):
        tokenizer = ChatTokenizer(folder)
        ids = tokenizer.encode_chat([ChatMessage(role="user", content="What is a list?")])
        assert ids[0] == lm.config.bos_token_id
        logits, cache = lm.prefill(ids)
        assert logits.shape == (lm.config.vocab_size,) and np.isfinite(logits).all()
        logits2, _ = lm.decode([int(logits.argmax())], [cache])
        assert logits2.shape == (1, lm.config.vocab_size)


def test_template_matches_python_renderer(built: tuple[Path, ModelPaths]) -> None:
    from switchyard.tokenizer import ChatTokenizer
    from switchyard.wire import ChatMessage

    _, paths = built
    tokenizer = ChatTokenizer(paths.edge)
    turns = [
        ("system", "Be brief."),
        ("user", " What is a tuple? "),
        ("assistant", "A sequence."),
        ("user", "And?"),
    ]
    messages = [ChatMessage(role=role, content=content) for role, content in turns]
    expected = render_chat([(r, c) for r, c in turns], add_generation_prompt=True)  # type: ignore[misc]
    assert tokenizer.render(messages) == expected
    assert expected == "<|bos|><|system|>Be brief.<|user|>What is a tuple?<|assistant|>A sequence.<|eos|>" + (
        "<|user|>And?<|assistant|>"
    )


def test_clean_keeps_prose_and_drops_code() -> None:
    text = (
        "Return the sum of the values. It is computed lazily.\n\n"
        "    >>> total([1, 2])\n    3\n\n"
        "Call f(x) first. Then the result is cached for later calls."
    )
    assert list(clean(text)) == [
        "Return the sum of the values. It is computed lazily.",
        "Then the result is cached for later calls.",
    ]


def test_corpus_and_documents_are_deterministic() -> None:
    first = build_corpus(max_chars=50_000)
    assert first == build_corpus(max_chars=50_000)
    assert 40_000 <= sum(len(p) + 1 for p in first) < 60_000
    documents = format_documents(first, seed=3)
    assert documents == format_documents(first, seed=3)
    chats = [d for d in documents if "<|assistant|>" in d]
    assert chats and all(d.startswith("<|bos|>") and d.endswith("<|eos|>") for d in documents)
