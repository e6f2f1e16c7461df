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


@pytest.mark.parametrize(
    ("text", "upper", "digits", "math_chars", "quotes", "non_ascii"),
    [
        ('AB c "q" 12 x=y+1', 2, 3, 2, 2, 0),
        # Only ASCII A-Z is upper case; \d counts other scripts' digits; curly quotes count.
        ("\u00c9\u00c0B \u0663\u0664 \uff15 \u201cq\u201d [a]", 1, 3, 2, 2, 7),
    ],
)
def test_character_counts_on_ascii_and_unicode_text(
    text: str, upper: int, digits: int, math_chars: int, quotes: int, non_ascii: int
) -> None:
    named = _named(text)
    n = len(text) + 1
    assert named["upper_share"] == pytest.approx(upper / n)
    assert named["digit_share"] == pytest.approx(digits / n)
    assert named["math_char_share"] == pytest.approx(math_chars / n)
    assert named["quotes"] == quotes
    assert named["non_ascii_share"] == pytest.approx(non_ascii / n)
