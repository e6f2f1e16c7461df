"""Surface statistics: one finite value per name, and the line-layout cues read what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from router.difficulty.features import SURFACE_NAMES, canonical_text, surface_features

ODD_TEXTS = [
    "",
    "\n\n\n",
    "9" * 400,
    "1.2.3.4 and 1,000,000.5 and 10^400",
    "\u00e9\u4e2d\U0001f600 " * 10,
    "line\n" * 2000,
]


def _named(text: str) -> dict[str, float]:
    return dict(zip(SURFACE_NAMES, surface_features(canonical_text(text)).tolist(), strict=True))


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_one_finite_value_per_name(text: str) -> None:
    values = surface_features(text)
    assert values.shape == (len(SURFACE_NAMES),)
    assert np.isfinite(values).all()


def test_paired_judgement_answers_are_counted() -> None:
    prompt = (
        "Statement 1 | Every group is abelian. Statement 2 | Every field is a ring.\n"
        "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
    )
    named = _named(prompt)
    assert named["pair_line_share"] == pytest.approx(4 / 5)
    assert named["pipes"] == 2.0


def test_numeric_answers_and_a_single_line_prompt() -> None:
    named = _named("What is 12 times 7?\nA. 84\nB. 74\nC. 96\nD. 82\nAnswer:")
    assert named["numeric_line_share"] == pytest.approx(4 / 5)
    assert named["log_largest_number"] == pytest.approx(np.log1p(96.0))
    single = _named("How many eggs are left if Ann buys 12 and eats 3 each day for 2 days?")
    assert single["pair_line_share"] == single["numeric_line_share"] == single["log_answer_line_chars"] == 0.0
    assert single["quantity_cues_per_word"] > 0.0
