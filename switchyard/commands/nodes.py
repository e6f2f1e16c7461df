"""``switchyard edge`` and ``switchyard cloud``: run one model node."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
from pathlib import Path

from edge_runtime.precision import PRECISIONS
from switchyard.node_server import NodeOptions, serve_node

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind, running, help_text in (
        ("edge", 16, "run an edge node: an ONNX model folder served with onnxruntime"),
        ("cloud", 32, "run the cloud backend: a torch model folder (config.json + safetensors)"),
    ):
        p = sub.add_parser(kind, help=help_text, description=help_text)
        p.add_argument("--model", type=Path, required=True, help="model folder")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--node-id", default="", help="id announced to routers (default: KIND-HOSTNAME)")
        p.add_argument("--max-running", type=int, default=running, help="sequences decoded together")
        p.add_argument("--max-queued", type=int, default=running * 16, help="requests waiting beyond that")
        p.add_argument(
            "--secret-env",
            default="SWITCHYARD_CLUSTER_SECRET",
            help="environment variable holding the cluster secret routers must present",
        )
        p.add_argument(
            "--allow-no-secret",
            action="store_true",
            help="serve on a non-loopback address without a cluster secret (any router may connect)",
        )
        p.add_argument("--drain-grace-s", type=float, default=30.0, help="on SIGTERM, time to finish streams")
        p.add_argument(
            "--max-kv-mib",
            type=int,
            default=None,
            help="KV memory for running sequences; beyond it requests queue",
        )
        p.add_argument(
            "--session-kv-mib", type=int, default=64, help="KV kept for sessions' next turns (LRU), in MiB"
        )
        p.add_argument("--redis-url", default=None, help="announce this node in the fleet registry there")
        p.add_argument(
            "--advertise-url", default=None, help="node URL for routers (default ws://HOST:PORT/node)"
        )
        if kind == "edge":
            p.add_argument(
                "--precision",
                choices=PRECISIONS,
                default="auto",
                help="auto: the folder's model.int8.onnx on the CPU when it has one, else model.onnx",
            )
        if kind == "cloud":
            _add_tensor_parallel_args(p)
        p.set_defaults(func=_run, kind=kind)


def _add_tensor_parallel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tp",
        type=int,
        default=1,
        help="tensor-parallel ranks: spawned on this machine, or torchrun's WORLD_SIZE under torchrun",
    )
    p.add_argument(
        "--tp-timeout-s", type=float, default=60.0, help="deadline of every collective between ranks"
    )


def _run(args: argparse.Namespace) -> int:
    secret = os.environ.get(args.secret_env, "")
    if not secret and not _loopback(args.host) and not args.allow_no_secret:
        # Refuse an open node on a reachable address rather than serve every router that finds it.
        log.error(
            "no cluster secret in $%s while listening on %s: set it (routers present the same value) "
            "or pass --allow-no-secret",
            args.secret_env,
            args.host,
        )
        return 2
    opts = NodeOptions(
        model_dir=args.model,
        kind=args.kind,
        node_id=args.node_id,
        secret=secret,
        max_running=args.max_running,
        max_queued=args.max_queued,
        max_kv_bytes=args.max_kv_mib * 2**20 if args.max_kv_mib else None,
        session_kv_bytes=args.session_kv_mib * 2**20,
        precision=getattr(args, "precision", "auto"),
    )
    if args.kind == "edge":
        from edge_runtime.daemon import build_app

        app = build_app(opts)
    else:
        from cloud_backend.server import build_app as build_cloud_app
        from cloud_backend.server import follow_if_torchrun_rank

        code = follow_if_torchrun_rank(args.model, timeout_s=args.tp_timeout_s)
        if code is not None:  # torchrun rank > 0: it follows rank 0 and serves nothing itself
            return code
        app = build_cloud_app(opts, tp=args.tp, tp_timeout_s=args.tp_timeout_s)
    _install_uvloop()
    asyncio.run(
        serve_node(
            app,
            args.host,
            args.port,
            drain_grace_s=args.drain_grace_s,
            redis_url=args.redis_url,
            advertise_url=args.advertise_url,
        )
    )
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
