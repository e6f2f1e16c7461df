"""The scorer's contract: a score in [0, 1], deterministic, loadable from the shipped artifact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from router.difficulty.dataset import LabelledPrompt
from router.difficulty.features import canonical_text
from router.difficulty.scorer import DifficultyClassifier

PROMPTS = [
    "",
    "hi",
    "What is the capital of France?\nA. Paris\nB. Rome\nC. Bern\nD. Oslo\nAnswer:",
    "Solve for x: 3x^2 - 12x + 9 = 0 and explain every step. " * 40,
    "\u00e9\u4e2d\U0001f600 " * 10,
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_shipped_model_scores_lie_in_0_1(prompt: str) -> None:
    model = DifficultyClassifier.load()
    score = model.score(prompt)
    assert 0.0 <= score <= 1.0
    assert model.score(prompt) == score


def test_small_model_round_trips_through_npz(small_model: DifficultyClassifier, tmp_path: Path) -> None:
    path = tmp_path / "copy.npz"
    small_model.save(path)
    again = DifficultyClassifier.load(path)
    for prompt in PROMPTS:
        assert again.score(prompt) == pytest.approx(small_model.score(prompt), abs=1e-6)


def test_small_model_ranks_better_than_chance(
    small_model: DifficultyClassifier, labelled_sample: list[LabelledPrompt]
) -> None:
    scores = np.array([small_model.score(r.prompt) for r in labelled_sample])
    helped = np.array([(not r.weak_correct) and r.strong_correct for r in labelled_sample])
    assert scores[helped].mean() > scores[~helped].mean()


def test_multiple_choice_scaffolding_is_stripped() -> None:
    text = canonical_text("Q?\nA. one\nB. two\nAnswer:")
    assert text == "Q?\none\ntwo"


def _hurt_model(model: DifficultyClassifier) -> DifficultyClassifier:
    """The P(hurt) model alone, as a classifier whose score is that probability."""
    assert model.hurt_surface_weights is not None
    return dataclasses.replace(
        model,
        ngram_weights=np.zeros_like(model.ngram_weights),
        surface_weights=model.hurt_surface_weights,
        bias=model.hurt_bias,
        hurt_weight=0.0,
    )


def test_score_is_the_shrunk_expected_gain(small_model: DifficultyClassifier) -> None:
    """score = (P(helped) - λ P(hurt) + λ) / (1 + λ), from the two logistic models."""
    lam = small_model.hurt_weight
    assert lam > 0.0 and small_model.hurt_surface_weights is not None
    helped_only = dataclasses.replace(small_model, hurt_weight=0.0)
    hurt_only = _hurt_model(small_model)
    for prompt in PROMPTS:
        expected = (helped_only.score(prompt) - lam * hurt_only.score(prompt) + lam) / (1 + lam)
        assert small_model.score(prompt) == pytest.approx(expected, abs=1e-12)
        assert 0.0 <= small_model.score(prompt) <= 1.0


def test_the_hurt_model_ranks_hurt_prompts_higher(
    small_model: DifficultyClassifier, labelled_sample: list[LabelledPrompt]
) -> None:
    assert small_model.hurt_surface_weights is not None
    hurt_only = _hurt_model(small_model)
    scores = np.array([hurt_only.score(r.prompt) for r in labelled_sample])
    hurt = np.array([r.weak_correct and not r.strong_correct for r in labelled_sample])
    assert scores[hurt].mean() > scores[~hurt].mean()


def test_a_format_2_file_loads_as_helped_only(small_model: DifficultyClassifier, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    small_model.save(path)
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if not k.startswith("hurt_")}
    old["format_version"] = np.int64(2)
    legacy = tmp_path / "v2.npz"
    np.savez_compressed(legacy, **old)
    loaded = DifficultyClassifier.load(legacy)
    assert loaded.hurt_weight == 0.0
    helped_only = dataclasses.replace(small_model, hurt_weight=0.0)
    for prompt in PROMPTS:
        assert loaded.score(prompt) == pytest.approx(helped_only.score(prompt), abs=1e-6)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_bad_hurt_weight_is_refused(small_model: DifficultyClassifier, bad: float) -> None:
    with pytest.raises(ValueError, match="hurt_weight"):
        dataclasses.replace(small_model, hurt_weight=bad)


def test_a_hurt_weight_without_hurt_weights_is_refused(small_model: DifficultyClassifier) -> None:
    with pytest.raises(ValueError, match="hurt_surface_weights"):
        dataclasses.replace(small_model, hurt_surface_weights=None)
