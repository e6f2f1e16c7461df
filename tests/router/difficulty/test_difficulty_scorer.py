"""The scorer's contract: a probability, deterministic, loadable from the shipped artifact."""

from __future__ import annotations

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
def test_shipped_model_scores_are_probabilities(prompt: str) -> None:
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
