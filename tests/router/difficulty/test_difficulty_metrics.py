"""APGR/CPT on hand-made routing outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.difficulty.metrics import QualityCurve, apgr, cpt, quality_curve, routing_scores


def _outcomes(n: int, helped_share: float) -> tuple[np.ndarray, np.ndarray]:
    # Strong always right; the weak model fails exactly the first helped_share of prompts.
    weak = np.arange(n) >= int(n * helped_share)
    return weak, np.ones(n, dtype=bool)


def test_perfect_router_recovers_whole_gap() -> None:
    weak, strong = _outcomes(10_000, 0.01)
    oracle = (~weak).astype(float)
    oracle += np.linspace(0.0, 0.5, oracle.size)[::-1] * 1e-3  # break ties so the deciles differ
    assert routing_scores(oracle, weak, strong, num_bins=100).apgr == pytest.approx(1.0, abs=0.01)
    assert routing_scores(oracle, weak, strong).apgr > 0.94


def test_random_router_is_about_half() -> None:
    rng = np.random.default_rng(0)
    weak = rng.random(20_000) < 0.68
    strong = weak | (rng.random(20_000) < 0.5)
    result = routing_scores(rng.random(20_000), weak, strong)
    assert result.apgr == pytest.approx(0.5, abs=0.03)
    assert result.cpt[0.5] == pytest.approx(0.5, abs=0.05)


def test_worst_router_is_below_half() -> None:
    weak, strong = _outcomes(1000, 0.3)
    assert routing_scores(weak.astype(float), weak, strong).apgr < 0.2


def test_curve_runs_from_all_weak_to_all_strong() -> None:
    weak, strong = _outcomes(100, 0.2)
    curve = quality_curve(np.arange(100.0), weak, strong)
    assert curve.strong_share[0] == 0.0 and curve.strong_share[-1] == 1.0
    assert curve.accuracy[0] == pytest.approx(0.8) and curve.accuracy[-1] == pytest.approx(1.0)
    assert curve.strong_share.size == 11


def test_cpt_interpolates_linearly_between_points() -> None:
    curve = QualityCurve(
        strong_share=np.array([0.0, 0.4, 1.0]),
        accuracy=np.array([0.6, 0.7, 0.8]),
        weak_accuracy=0.6,
        strong_accuracy=0.8,
    )
    assert cpt(curve, 0.2) == pytest.approx(0.16)
    assert cpt(curve, 0.5) == pytest.approx(0.4)
    assert cpt(curve, 0.8) == pytest.approx(0.4 + 0.6 * 0.6)
    # Trapezoids: 0.4 * 0.65 + 0.6 * 0.75 = 0.71, so (0.71 - 0.6) / 0.2.
    assert apgr(curve) == pytest.approx(0.55)


def test_cpt_is_first_crossing_on_non_monotone_curve() -> None:
    curve = QualityCurve(
        strong_share=np.array([0.0, 0.2, 0.5, 1.0]),
        accuracy=np.array([0.6, 0.75, 0.65, 0.8]),
        weak_accuracy=0.6,
        strong_accuracy=0.8,
    )
    assert cpt(curve, 0.5) == pytest.approx(0.2 * (0.1 / 0.15))


def test_cpt_never_reached_is_nan() -> None:
    curve = QualityCurve(np.array([0.0, 1.0]), np.array([0.6, 0.7]), 0.6, 0.8)
    assert math.isnan(cpt(curve, 0.8))


def test_bad_shapes_and_equal_models_are_rejected() -> None:
    with pytest.raises(ValueError, match="1-D"):
        quality_curve([0.1, 0.2], [True], [True, False])
    with pytest.raises(ValueError, match="undefined"):
        routing_scores([0.1, 0.2], [True, False], [True, False])
