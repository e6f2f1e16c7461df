"""The quality-curve plot; matplotlib is imported only here, and only when a plot is asked for."""

from __future__ import annotations

from pathlib import Path

from router.difficulty.metrics import QualityCurve


def write_quality_plot(curve: QualityCurve, path: Path) -> None:
    """Accuracy over share of cloud calls, with random and always-weak/always-strong references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(curve.strong_share * 100, curve.accuracy, marker=".", label="classifier")
    ax.plot(
        [0, 100], [curve.weak_accuracy, curve.strong_accuracy], linestyle=":", color="grey", label="random"
    )
    ax.axhline(curve.weak_accuracy, linestyle="--", color="tab:green", label="always weak (edge)")
    ax.axhline(curve.strong_accuracy, linestyle="--", color="tab:red", label="always strong (cloud)")
    ax.set_xlabel("cloud calls (%)")
    ax.set_ylabel("accuracy")
    ax.set_title("Routing quality curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
