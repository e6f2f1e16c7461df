"""Build the demo models from nothing but this machine's Python: corpus, tokenizer, two trained Llamas.

``data_dir/models/edge`` holds an ONNX export for the edge runtime, ``data_dir/models/cloud`` a
safetensors folder for the torch backend; each has ``config.json``, ``tokenizer.json`` and
``tokenizer_config.json``. ``manifest.json`` is written last and atomically: while it names this
build version the folders are complete and a call returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Bump when anything that changes the artifacts changes: corpus, tokenizer, sizes, training.
BUILD_VERSION = "1"
MANIFEST_NAME = "manifest.json"
EDGE_NAME = "switchyard-edge-demo"
CLOUD_NAME = "switchyard-cloud-demo"
_EDGE_FILES = ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json")
_CLOUD_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class ModelPaths:
    edge: Path
    cloud: Path


@dataclass(frozen=True, slots=True)
class _Recipe:
    corpus_chars: int
    vocab_size: int
    edge_steps: int
    cloud_steps: int
    batch_size: int
    seq_len: int


_FULL = _Recipe(
    corpus_chars=3_000_000, vocab_size=4096, edge_steps=300, cloud_steps=200, batch_size=8, seq_len=128
)
_QUICK = _Recipe(corpus_chars=150_000, vocab_size=2048, edge_steps=2, cloud_steps=2, batch_size=2, seq_len=32)


def ensure_models(
    data_dir: Path, *, force: bool = False, progress: bool = True, quick: bool = False
) -> ModelPaths:
    """The demo models under ``data_dir/models``, built first unless a finished build is there.

    A full build satisfies a ``quick`` request; a quick build does not satisfy a full one.
    """
    models = data_dir / "models"
    paths = ModelPaths(edge=models / "edge", cloud=models / "cloud")
    if not force and _is_built(models, quick=quick):
        return paths
    models.mkdir(parents=True, exist_ok=True)
    with _exclusive(models / ".lock"):
        # Another process may have finished the same build while this one waited for the lock.
        if force or not _is_built(models, quick=quick):
            _build(models, _QUICK if quick else _FULL, quick=quick, progress=progress)
    return paths


def _is_built(models: Path, *, quick: bool) -> bool:
    try:
        manifest = json.loads((models / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if manifest.get("build_version") != BUILD_VERSION or (manifest.get("quick") and not quick):
        return False
    return all((models / "edge" / f).is_file() for f in _EDGE_FILES) and all(
        (models / "cloud" / f).is_file() for f in _CLOUD_FILES
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(models: Path, recipe: _Recipe, *, quick: bool, progress: bool) -> None:
    import torch
    from tqdm import tqdm

    from cloud_backend.llama import config_to_dict, save_llama
    from edge_runtime.export import export_onnx
    from switchyard.lm import ModelConfig
    from switchyard.modelbuild.chat_template import tokenizer_config
    from switchyard.modelbuild.corpus import build_corpus
    from switchyard.modelbuild.tokenizer import BOS, EOS, save_tokenizer, train_tokenizer
    from switchyard.modelbuild.train import TrainSpec, encode_documents, format_documents, train

    started = time.monotonic()
    torch.set_num_threads(2)
    staging = models / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    edge_dir, cloud_dir = staging / "edge", staging / "cloud"
    total = recipe.edge_steps + recipe.cloud_steps + 3
    with tqdm(total=total, desc="corpus", unit="step", disable=not progress) as bar:
        paragraphs = build_corpus(max_chars=recipe.corpus_chars)
        bar.update()
        bar.set_description("tokenizer")
        tokenizer = train_tokenizer(paragraphs, vocab_size=recipe.vocab_size)
        tokens = encode_documents(tokenizer, format_documents(paragraphs))
        bar.update()
        vocab = int(tokenizer.get_vocab_size())
        bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
        edge_config = ModelConfig(
            vocab_size=vocab,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=352,
            max_position_embeddings=1024,
            bos_token_id=bos,
            eos_token_id=eos,
            tie_word_embeddings=True,
            name=EDGE_NAME,
        )
        cloud_config = replace(
            edge_config,
            hidden_size=192,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=512,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            name=CLOUD_NAME,
        )
        losses: dict[str, float] = {}

        def run(name: str, config: ModelConfig, steps: int, seed: int) -> Any:
            bar.set_description(name)

            def on_step(step: int, loss: float) -> None:
                losses[name] = loss
                bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
                bar.update()

            spec = TrainSpec(config, steps, recipe.batch_size, recipe.seq_len, seed=seed)
            return train(spec, tokens, on_step)

        edge = run("edge", edge_config, recipe.edge_steps, seed=1)
        bar.set_description("export")
        export_onnx(edge, edge_dir / "model.onnx")
        _write_json(edge_dir / "config.json", config_to_dict(edge_config))
        cloud = run("cloud", cloud_config, recipe.cloud_steps, seed=2)
        save_llama(cloud, cloud_dir)
        for folder, config in ((edge_dir, edge_config), (cloud_dir, cloud_config)):
            save_tokenizer(tokenizer, folder / "tokenizer.json")
            _write_json(folder / "tokenizer_config.json", tokenizer_config(config.max_position_embeddings))
        bar.update()
    manifest = {
        "build_version": BUILD_VERSION,
        "quick": quick,
        "seconds": round(time.monotonic() - started, 1),
        "corpus_paragraphs": len(paragraphs),
        "training_tokens": int(tokens.numel()),
        "final_loss": {name: round(loss, 3) for name, loss in losses.items()},
    }
    _install(staging, models, manifest)


def _install(staging: Path, models: Path, manifest: dict[str, Any]) -> None:
    """Swap the staged folders in; the manifest goes last, so a crash leaves no half-built model."""
    (models / MANIFEST_NAME).unlink(missing_ok=True)
    for name in ("edge", "cloud"):
        shutil.rmtree(models / name, ignore_errors=True)
        (staging / name).rename(models / name)
    staging.rmdir()
    _write_json(models / MANIFEST_NAME, manifest)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
