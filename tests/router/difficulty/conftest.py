"""A difficulty model trained in about a second on a slice of the shipped data."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.difficulty.dataset import DEFAULT_DATA, LabelledPrompt, read_labelled
from router.difficulty.scorer import DifficultyClassifier
from router.difficulty.train import TrainConfig, fit_classifier


@pytest.fixture(scope="session")
def labelled_sample() -> list[LabelledPrompt]:
    rows = read_labelled(DEFAULT_DATA)
    return rows[::20]


@pytest.fixture(scope="session")
def small_model_path(labelled_sample: list[LabelledPrompt], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fit_classifier(labelled_sample, TrainConfig(min_domains=2, max_vocabulary=2000))
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def small_model(small_model_path: Path) -> DifficultyClassifier:
    return DifficultyClassifier.load(small_model_path)
