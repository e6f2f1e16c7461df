"""``switchyard policy check FILE...`` and ``switchyard policy schema``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policy", help="validate routing policy files, print their JSON Schema")
    verbs = p.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("check", help="validate policy files; errors name file, line and field")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=_check)
    schema = verbs.add_parser("schema", help="print the JSON Schema of policy files (for editors)")
    schema.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    from router.policy import PolicyError, load_policy

    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"ok {path}: policy {policy.name!r}, {len(policy.rules)} rules, sticky={policy.sticky}")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    from router.policy import policy_json_schema

    print(json.dumps(policy_json_schema(), indent=2))
    return 0
