"""``switchyard models``: build the demo models, export a Hugging Face causal LM folder to ONNX."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_data_dir() -> Path:
    configured = os.environ.get("SWITCHYARD_DATA_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "switchyard"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("models", help="build or convert models")
    sub = parser.add_subparsers(dest="models_command", required=True)

    build = sub.add_parser("build", help="train the edge and cloud demo models (offline, ~2 min)")
    build.add_argument(
        "--data-dir", type=Path, default=None, help="default: $SWITCHYARD_DATA_DIR or ~/.cache/switchyard"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a finished build is there")
    build.add_argument("--quick", action="store_true", help="a few training steps only (for tests)")
    build.set_defaults(func=_build)

    export = sub.add_parser(
        "export-onnx",
        help="export a Hugging Face Llama, Qwen2 or GPT-2 folder to an ONNX folder (needs transformers)",
    )
    export.add_argument("hf_dir", type=Path)
    export.add_argument("out_dir", type=Path)
    export.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weights in model.onnx.data beside the graph (default: only past protobuf's 2 GB limit)",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (calibrated int8 weights and activations), which CPU nodes run",
    )
    export.set_defaults(func=_export)


def _build(args: argparse.Namespace) -> int:
    from switchyard.modelbuild.build import ensure_models

    paths = ensure_models(args.data_dir or default_data_dir(), force=args.force, quick=args.quick)
    print(f"edge:  {paths.edge}\ncloud: {paths.cloud}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge_runtime.hf_export import export_hf_dir

    path = export_hf_dir(args.hf_dir, args.out_dir, external_data=args.external_data)
    if args.int8:
        from edge_runtime.quantize import quantize_int8

        print(quantize_int8(args.out_dir))
    print(path)
    return 0
