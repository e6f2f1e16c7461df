"""The edge node daemon: an ONNX model folder served over the node protocol."""

from __future__ import annotations

from aiohttp import web

from switchyard.node_server import NodeOptions, build_node_app


def build_app(opts: NodeOptions, *, warm_up: bool = True) -> web.Application:
    from edge_runtime.onnx_lm import load  # onnxruntime is heavy: only the daemon imports it

    return build_node_app(load(opts.model_dir, precision=opts.precision), opts, warm_up=warm_up)
