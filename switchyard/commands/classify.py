"""``switchyard classify``: score prompts, evaluate on labelled prompts, or retrain the classifier."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("classify", help="difficulty classifier: score, evaluate or retrain")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--input", type=Path, help="JSON lines with a 'prompt' field to score")
    mode.add_argument("--evaluate", type=Path, help="labelled JSON lines (weak_correct/strong_correct)")
    mode.add_argument("--train", action="store_true", help="retrain the shipped artifact, print grouped CV")
    parser.add_argument("--output", type=Path, help="scored JSON lines (--input) or model .npz (--train)")
    parser.add_argument("--model", type=Path, help="model .npz (default: the shipped artifact)")
    parser.add_argument("--data", type=Path, help="training data for --train (default: shipped data)")
    parser.add_argument("--plot", type=Path, help="with --evaluate: write the quality curve as a PNG")
    parser.add_argument("--skip-cv", action="store_true", help="with --train: fit only, no grouped CV")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from router.difficulty.dataset import PromptFileError

    try:
        if args.train:
            return _train(args)
        if args.evaluate is not None:
            return _evaluate(args)
        return _score(args)
    except PromptFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _score(args: argparse.Namespace) -> int:
    from router.difficulty.dataset import read_objects
    from router.difficulty.scorer import DifficultyClassifier

    if args.output is None:
        print("error: --input needs --output", file=sys.stderr)
        return 2
    model = DifficultyClassifier.load(args.model)
    # Validate and score the whole file before writing, so a bad line leaves no partial output.
    scored = [{**obj, "score": model.score(obj["prompt"])} for _, obj in read_objects(args.input)]
    with args.output.open("w", encoding="utf-8") as out:
        for obj in scored:
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    log.info("scored %d prompts into %s", len(scored), args.output)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from router.difficulty.dataset import read_labelled
    from router.difficulty.metrics import quality_curve, routing_scores
    from router.difficulty.scorer import DifficultyClassifier

    rows = read_labelled(args.evaluate)
    model = DifficultyClassifier.load(args.model)
    scores = np.array([model.score(r.prompt) for r in rows])
    weak = np.array([r.weak_correct for r in rows])
    strong = np.array([r.strong_correct for r in rows])
    if weak.mean() == strong.mean():
        print("error: weak and strong accuracy are equal; APGR/CPT are undefined", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"prompts": len(rows), **routing_scores(scores, weak, strong).as_dict()}
    if args.plot is not None:
        from router.difficulty.plot import write_quality_plot

        write_quality_plot(quality_curve(scores, weak, strong), args.plot)
        result["plot"] = str(args.plot)
    print(json.dumps(result))
    return 0


def _train(args: argparse.Namespace) -> int:
    from router.difficulty.dataset import DEFAULT_DATA, read_labelled
    from router.difficulty.scorer import DEFAULT_MODEL
    from router.difficulty.train import TrainConfig, fit_classifier, grouped_cv_report, out_of_domain_scores

    rows = read_labelled(args.data or DEFAULT_DATA)
    config = TrainConfig()
    output: Path = args.output or DEFAULT_MODEL
    model = fit_classifier(rows, config)
    model.save(output)
    log.info("wrote %s (%d n-grams)", output, len(model.vocabulary))
    report: dict[str, Any] = {"model": str(output), "prompts": len(rows)}
    if not args.skip_cv:
        log.info("leave-one-domain-out cross-validation over %d domains", len({r.domain for r in rows}))
        report["leave_one_domain_out"] = grouped_cv_report(rows, out_of_domain_scores(rows, config))
    print(json.dumps(report))
    return 0
