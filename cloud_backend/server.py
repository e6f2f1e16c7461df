"""The cloud backend: a torch model folder served over the node protocol."""

from __future__ import annotations

from aiohttp import web

from switchyard.node_server import NodeOptions, build_node_app


def build_app(opts: NodeOptions, *, warm_up: bool = True) -> web.Application:
    from cloud_backend.torch_lm import load  # torch is heavy: only the backend imports it

    return build_node_app(load(opts.model_dir), opts, warm_up=warm_up)
