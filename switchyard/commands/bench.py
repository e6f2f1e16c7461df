"""``switchyard bench``: benchmarks, one sub-command per tier (``bench edge``, ``bench cloud``, ...).

Each module listed in ``_BENCHES`` exposes ``register(subparsers)`` and adds its own sub-command;
heavy imports stay inside the function it runs, so ``switchyard --help`` stays fast. A module that is
not there (not written yet) is skipped.
"""

from __future__ import annotations

import argparse

from switchyard.cli import register_modules

_BENCHES: tuple[str, ...] = ("edge_runtime.bench", "cloud_backend.bench", "router.bench")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "benchmark one tier of the system"
    p = sub.add_parser("bench", help=text, description=text)
    register_modules(p.add_subparsers(dest="bench", required=True), _BENCHES)
