"""Check the edge runtime's CUDA fast path: logits parity with the CPU and step times, as JSON.

    python -m edge_runtime.gpu_check --json [--shape gpt2|tiny] [--model DIR] [--steps N]

Builds a randomly initialised decoder of GPT-2 small's shape (12 layers, 768 wide, 50,257 tokens,
1,024 positions; Llama blocks, which is what the exporter writes) or a tiny one, exports it to ONNX
(fp32, and fp16 where CUDA is present), or uses an exported folder given with ``--model``. Then:

* parity: greedy prefill and decode steps on the CPU and on CUDA, largest logit difference;
* speed: ms per decode step at batch 1 and tokens/s at batch 8 and 32, with the KV cache kept on
  the device through IOBinding against plain ``run()`` (which copies it both ways every step).

Without CUDA it says so and runs the CPU parts (both runners on the CPU), so the script itself is
tested where there is no GPU. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from switchyard.lm import Logits, ModelConfig

BATCHES = (8, 32)
_SHAPES: dict[str, dict[str, int]] = {
    "gpt2": {"vocab": 50257, "hidden": 768, "layers": 12, "heads": 12, "ffn": 3072, "ctx": 1024},
    "tiny": {"vocab": 512, "hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "ctx": 256},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.gpu_check", description=__doc__)
    parser.add_argument("--shape", choices=sorted(_SHAPES), default="gpt2")
    parser.add_argument("--model", type=Path, default=None, help="an exported edge model folder instead")
    parser.add_argument("--steps", type=int, default=32, help="decode steps per timing")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per sequence")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    report = run_check(args.shape, args.model, steps=args.steps, prompt=args.prompt, quiet=args.json)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def run_check(shape: str, model_dir: Path | None, *, steps: int, prompt: int, quiet: bool) -> dict[str, Any]:
    import onnxruntime as ort

    from edge_runtime.onnx_lm import cuda_available, load

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    cuda = cuda_available()
    report: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "cuda_available": cuda,
        "shape": "folder" if model_dir else shape,
    }
    if not cuda:
        report["note"] = "CUDAExecutionProvider is not available: CPU parts only (both runners on the CPU)"
    with tempfile.TemporaryDirectory(prefix="sy-gpu-check-") as tmp:
        folders = {"fp32": model_dir} if model_dir else _export(shape, Path(tmp), fp16=cuda, say=say)
        cpu = load(folders["fp32"], cuda=False, precision="fp32")
        ctx = cpu.context_window
        prompt = min(prompt, ctx // 2)
        steps = min(steps, ctx - prompt - 1)
        report["prompt_tokens"], report["decode_steps"] = prompt, steps
        ids = _prompt_ids(cpu.config, prompt)
        reference = _greedy_logits(cpu, ids, steps=8)
        parity: dict[str, Any] = {}
        variants: dict[str, Any] = {
            "cpu": {
                "plain": cpu,
                "io_binding": load(folders["fp32"], cuda=False, io_binding=True, precision="fp32"),
            }
        }
        parity["cpu_io_binding_vs_cpu"] = _max_diff(
            reference, _greedy_logits(variants["cpu"]["io_binding"], ids, steps=8)
        )
        if cuda:
            for precision, folder in folders.items():
                bound = load(folder, io_binding=True, precision="fp32")
                plain = load(folder, io_binding=False, precision="fp32")
                variants[f"cuda_{precision}"] = {"plain": plain, "io_binding": bound}
                report.setdefault("cuda_providers", bound.providers)
                parity[f"cuda_{precision}_vs_cpu_fp32"] = _max_diff(
                    reference, _greedy_logits(bound, ids, steps=8)
                )
                parity[f"cuda_{precision}_plain_vs_io_binding"] = _max_diff(
                    _greedy_logits(plain, ids, steps=8), _greedy_logits(bound, ids, steps=8)
                )
        report["parity_max_abs_logit_diff"] = parity
        say(f"parity: {parity}")
        timings: dict[str, Any] = {}
        for name, runners in variants.items():
            timings[name] = {}
            for mode, lm in runners.items():
                row = {
                    "ms_per_step_b1": round(_ms_per_step(lm, ids, 1, steps), 3),
                    "tokens_per_s": {
                        str(b): round(b * 1e3 / _ms_per_step(lm, ids, b, steps), 1) for b in BATCHES
                    },
                }
                timings[name][mode] = row
                say(f"{name} {mode}: {row}")
        report["timings"] = timings
    return report


def _export(shape: str, out: Path, *, fp16: bool, say: Any) -> dict[str, Path]:
    import torch

    from cloud_backend.llama import LlamaForCausalLM, config_to_dict
    from edge_runtime.export import export_onnx

    dims = _SHAPES[shape]
    config = ModelConfig(
        vocab_size=dims["vocab"],
        hidden_size=dims["hidden"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["heads"],
        intermediate_size=dims["ffn"],
        max_position_embeddings=dims["ctx"],
        tie_word_embeddings=True,
        name=f"gpu-check-{shape}",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    folders: dict[str, Path] = {}
    for precision in ("fp32", "fp16") if fp16 else ("fp32",):
        folder = out / precision
        folder.mkdir()
        start = time.perf_counter()
        export_onnx(model, folder / "model.onnx", fp16=precision == "fp16")
        (folder / "config.json").write_text(json.dumps(config_to_dict(config)))
        say(f"exported {shape} {precision} in {time.perf_counter() - start:.1f}s")
        folders[precision] = folder
    return folders


def _prompt_ids(config: ModelConfig, n: int) -> list[int]:
    rng = np.random.default_rng(7)
    return [int(t) for t in rng.integers(2, config.vocab_size, size=n)]


def _greedy_logits(lm: Any, ids: list[int], *, steps: int) -> list[Logits]:
    logits, cache = lm.prefill(ids)
    out = [logits]
    for _ in range(steps):
        batch, (cache,) = lm.decode([int(np.argmax(out[-1]))], [cache])
        out.append(batch[0])
    return out


def _max_diff(a: list[Logits], b: list[Logits]) -> float:
    return round(max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)), 6)


def _ms_per_step(lm: Any, ids: list[int], batch: int, steps: int) -> float:
    """Mean wall time of a decode step for ``batch`` sequences after a ``len(ids)``-token prompt."""
    logits, caches = lm.prefill_batch([ids] * batch, [None] * batch)
    tokens = [int(t) for t in np.argmax(logits, axis=-1)]
    logits, caches = lm.decode(tokens, caches)  # warm the shapes of this batch
    start = time.perf_counter()
    for _ in range(steps):
        tokens = [int(t) for t in np.argmax(logits, axis=-1)]
        logits, caches = lm.decode(tokens, caches)
    return (time.perf_counter() - start) * 1e3 / steps


if __name__ == "__main__":
    raise SystemExit(main())
