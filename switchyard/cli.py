"""The ``switchyard`` command line: one sub-command per module, each registered here.

Sub-command modules expose ``register(subparsers)`` and keep their heavy imports inside the
function they run, so ``switchyard --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

from switchyard import logfmt

# (module, attribute) pairs; each attribute is a ``register(subparsers)`` function.
_COMMANDS: tuple[str, ...] = (
    "switchyard.commands.demo",
    "switchyard.commands.serve",
    "switchyard.commands.nodes",
    "switchyard.commands.models",
    "switchyard.commands.classify",
    "switchyard.commands.bench",
    "switchyard.commands.policy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    register_modules(parser.add_subparsers(dest="command", required=True), _COMMANDS)
    return parser


def register_modules(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], names: tuple[str, ...]
) -> None:
    """Let each module add its sub-command; a module that does not exist (yet) is skipped."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logfmt.configure(args.log_level, args.log_format)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
