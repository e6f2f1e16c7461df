"""``switchyard bench``: benchmarks, one sub-command per tier (``bench edge``, ``bench cloud``, ...).

Each module listed in ``_BENCHES`` exposes ``register(subparsers)`` and adds its own sub-command;
heavy imports stay inside the function it runs, so ``switchyard --help`` stays fast. A module that is
not there (not written yet) is skipped.
"""

from __future__ import annotations

import argparse
import importlib

_BENCHES: tuple[str, ...] = ("edge_runtime.bench", "cloud_backend.bench")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "benchmark one tier of the system"
    p = sub.add_parser("bench", help=text, description=text)
    benches = p.add_subparsers(dest="bench", required=True)
    for name in _BENCHES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(benches)
