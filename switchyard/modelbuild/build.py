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
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty
from typing import Any

from switchyard.lm import ModelConfig

# Bump when anything that changes the artifacts changes: corpus, tokenizer, sizes, training, export.
BUILD_VERSION = "4"
MANIFEST_NAME = "manifest.json"
EDGE_NAME = "switchyard-edge-demo"
CLOUD_NAME = "switchyard-cloud-demo"
_EDGE_FILES = ("model.onnx", "model.int8.onnx", "config.json", "tokenizer.json", "tokenizer_config.json")
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
    corpus_chars=3_000_000, vocab_size=4096, edge_steps=600, cloud_steps=450, batch_size=8, seq_len=128
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


@dataclass(frozen=True, slots=True)
class _Job:
    """One model to train and write; picklable, for a worker process."""

    kind: str  # "edge" (ONNX) or "cloud" (safetensors)
    config: ModelConfig
    steps: int
    batch_size: int
    seq_len: int
    seed: int
    out_dir: Path


def _model_configs(vocab: int, bos: int, eos: int) -> tuple[ModelConfig, ModelConfig]:
    edge = ModelConfig(
        vocab_size=vocab,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        # Multi-query attention: one kv head for the four query heads. Half the KV cache of two kv
        # heads (more sessions' prefixes fit the node's budget) and less work per sequence in a
        # batched decode step, where a model this small is bound by the per-row work.
        num_key_value_heads=1,
        intermediate_size=352,
        max_position_embeddings=1024,
        bos_token_id=bos,
        eos_token_id=eos,
        tie_word_embeddings=True,
        name=EDGE_NAME,
    )
    cloud = replace(
        edge,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=512,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        name=CLOUD_NAME,
    )
    return edge, cloud


def _run_job(job: _Job, tokens: Any, report: Callable[[str, float], None]) -> float:
    """Train ``job``'s model and write its weights; returns the last training loss."""
    import torch

    from cloud_backend.llama import config_to_dict, save_llama
    from edge_runtime.export import export_onnx
    from switchyard.modelbuild.train import TrainSpec, train

    # One thread per model, both models at once: two single-threaded trainings keep two cores busy
    # without the barrier stalls that a two-thread pool suffers whenever anything else runs.
    torch.set_num_threads(1)
    losses = [float("nan")]

    def on_step(step: int, loss: float) -> None:
        losses[0] = loss
        report(job.kind, loss)

    spec = TrainSpec(job.config, job.steps, job.batch_size, job.seq_len, seed=job.seed)
    model = train(spec, tokens, on_step)
    if job.kind == "edge":
        export_onnx(model, job.out_dir / "model.onnx")
        _write_json(job.out_dir / "config.json", config_to_dict(job.config))
    else:
        save_llama(model, job.out_dir)
    return losses[0]


def _run_job_in_worker(job: _Job, tokens: Any, queue: Any) -> float:
    return _run_job(job, tokens, lambda kind, loss: queue.put((kind, loss)))


def _run_jobs(jobs: list[_Job], tokens: Any, bar: Any, *, parallel: bool) -> dict[str, float]:
    losses: dict[str, float] = {}

    def report(kind: str, loss: float) -> None:
        losses[kind] = loss
        bar.set_postfix_str(" ".join(f"{k}={v:.2f}" for k, v in sorted(losses.items())), refresh=False)
        bar.update()

    if not parallel:
        return {job.kind: _run_job(job, tokens, report) for job in jobs}
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        queue = manager.Queue()
        futures = {job.kind: pool.submit(_run_job_in_worker, job, tokens, queue) for job in jobs}
        while not all(f.done() for f in futures.values()):
            try:
                report(*queue.get(timeout=0.2))
            except Empty:
                continue
        while not queue.empty():
            report(*queue.get())
        return {kind: future.result() for kind, future in futures.items()}


def _build(models: Path, recipe: _Recipe, *, quick: bool, progress: bool) -> None:
    from tqdm import tqdm

    from switchyard.modelbuild.chat_template import tokenizer_config
    from switchyard.modelbuild.corpus import build_corpus
    from switchyard.modelbuild.tokenizer import BOS, EOS, save_tokenizer, train_tokenizer
    from switchyard.modelbuild.train import encode_documents, format_documents

    started = time.monotonic()
    staging = models / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    with tqdm(total=recipe.edge_steps + recipe.cloud_steps + 2, desc="corpus", disable=not progress) as bar:
        paragraphs = build_corpus(max_chars=recipe.corpus_chars)
        bar.update()
        bar.set_description("tokenizer")
        tokenizer = train_tokenizer(paragraphs, vocab_size=recipe.vocab_size)
        tokens = encode_documents(tokenizer, format_documents(paragraphs))
        bar.update()
        bar.set_description("train")
        edge, cloud = _model_configs(
            int(tokenizer.get_vocab_size()), tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
        )
        jobs = [
            _Job("cloud", cloud, recipe.cloud_steps, recipe.batch_size, recipe.seq_len, 2, staging / "cloud"),
            _Job("edge", edge, recipe.edge_steps, recipe.batch_size, recipe.seq_len, 1, staging / "edge"),
        ]
        losses = _run_jobs(jobs, tokens, bar, parallel=not quick)
    for job in jobs:
        save_tokenizer(tokenizer, job.out_dir / "tokenizer.json")
        _write_json(
            job.out_dir / "tokenizer_config.json", tokenizer_config(job.config.max_position_embeddings)
        )
    # CPU edge nodes run the calibrated int8 graph beside the fp32 one (edge_runtime.quantize); its
    # calibration chats need the tokenizer written above.
    from edge_runtime.quantize import quantize_int8

    quantize_int8(staging / "edge")
    manifest = {
        "build_version": BUILD_VERSION,
        "quick": quick,
        "seconds": round(time.monotonic() - started, 1),
        "corpus_paragraphs": len(paragraphs),
        "training_tokens": int(tokens.numel()),
        "final_loss": {kind: round(loss, 3) for kind, loss in sorted(losses.items())},
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
