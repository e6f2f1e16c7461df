"""Routing-quality metrics from RouteLLM: the quality curve, APGR and CPT.

Definitions follow ``/work/shared/data/routing/README.md`` (and RouteLLM's evaluation):

* thresholds are the 11 edges of the score's deciles (minimum, 10 %, ..., 90 %, maximum);
  every edge but the last routes ``score >= edge`` to the strong model, the last routes
  ``score > maximum`` (nothing), so the curve runs from 100 % to 0 % strong calls;
* PGR at a point is ``(accuracy - weak accuracy) / (strong accuracy - weak accuracy)``;
* APGR is the trapezoid area under accuracy over strong-call share, normalised the same way;
* CPT(x) is the strong-call share where the curve, walked from 0 % upwards, first reaches
  PGR = x, interpolating linearly between its points.

Everything here is pure: arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CPT_LEVELS: tuple[float, ...] = (0.2, 0.5, 0.8)


@dataclass(frozen=True, slots=True)
class QualityCurve:
    """Points of the routing curve, sorted by strong-call share (both as fractions in [0, 1])."""

    strong_share: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]
    weak_accuracy: float
    strong_accuracy: float


@dataclass(frozen=True, slots=True)
class RoutingScores:
    """APGR and CPT at ``CPT_LEVELS`` (shares in [0, 1]) of one scorer on one labelled set."""

    apgr: float
    cpt: dict[float, float]

    def as_dict(self) -> dict[str, float]:
        out = {"apgr": round(self.apgr, 4)}
        for level, share in self.cpt.items():
            out[f"cpt{round(level * 100)}"] = round(share, 4)
        return out


def quality_curve(
    scores: npt.ArrayLike,
    weak_correct: npt.ArrayLike,
    strong_correct: npt.ArrayLike,
    num_bins: int = 10,
) -> QualityCurve:
    """Route at the score's quantile edges and return (strong share, accuracy) per edge."""
    s = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak_correct, dtype=bool)
    strong = np.asarray(strong_correct, dtype=bool)
    if not (s.ndim == 1 and s.shape == weak.shape == strong.shape):
        raise ValueError("scores, weak_correct and strong_correct must be 1-D arrays of one length")
    if s.size == 0:
        raise ValueError("cannot build a quality curve from no prompts")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    edges = np.quantile(s, np.linspace(0.0, 1.0, num_bins + 1))
    shares = np.empty(edges.size)
    accs = np.empty(edges.size)
    for i, edge in enumerate(edges):
        to_strong = s >= edge if i < edges.size - 1 else s > edge
        shares[i] = to_strong.mean()
        accs[i] = np.where(to_strong, strong, weak).mean()
    order = np.argsort(shares, kind="stable")
    return QualityCurve(
        strong_share=shares[order],
        accuracy=accs[order],
        weak_accuracy=float(weak.mean()),
        strong_accuracy=float(strong.mean()),
    )


def apgr(curve: QualityCurve) -> float:
    """Average performance gap recovered: normalised area under the curve."""
    gap = curve.strong_accuracy - curve.weak_accuracy
    if gap == 0.0:
        raise ValueError("APGR is undefined when the weak and strong models are equally accurate")
    x = curve.strong_share
    span = float(x[-1] - x[0])
    area = float(np.sum((x[1:] - x[:-1]) * (curve.accuracy[1:] + curve.accuracy[:-1]) / 2.0))
    return (area - curve.weak_accuracy * span) / (gap * span)


def cpt(curve: QualityCurve, level: float) -> float:
    """Share of strong calls needed to first reach PGR = ``level``; ``nan`` if never reached."""
    target = curve.weak_accuracy + level * (curve.strong_accuracy - curve.weak_accuracy)
    x, y = curve.strong_share, curve.accuracy
    if y[0] >= target:
        return float(x[0])
    for i in range(1, x.size):
        if y[i] >= target:
            rise = y[i] - y[i - 1]
            frac = (target - y[i - 1]) / rise if rise > 0 else 1.0
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return float("nan")


def routing_scores(
    scores: npt.ArrayLike,
    weak_correct: npt.ArrayLike,
    strong_correct: npt.ArrayLike,
    num_bins: int = 10,
) -> RoutingScores:
    curve = quality_curve(scores, weak_correct, strong_correct, num_bins)
    return RoutingScores(apgr=apgr(curve), cpt={level: cpt(curve, level) for level in CPT_LEVELS})
