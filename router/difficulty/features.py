"""Prompt features for the difficulty classifier: canonical text, word n-grams and surface statistics.

Only the standard library and numpy, so the router's hot path can score without training tools.
Training and scoring call the same functions here, so the two cannot drift apart.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import numpy.typing as npt

# Multiple-choice scaffolding ("\nA. ...", trailing "Answer:") identifies the MMLU source rather
# than difficulty; it is removed so the classifier cannot learn "exam format" as a signal.
_OPTION_MARK = re.compile(r"\n\s*\(?[A-D][.)]\s")
_ANSWER_CUE = re.compile(r"\n?\s*Answer:\s*$")
_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATION = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE)\b")
_COMPUTE = re.compile(r"\b(?:calculate|compute|how many|how much|what is the value|solve|find)\b", re.I)
_FIRST_PERSON = re.compile(r"\b(?:I|me|my)\b")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_DIGIT = re.compile(r"\d")
_UPPER = re.compile(r"[A-Z]")
_MATH_CHAR = re.compile(r"[-+*/=^<>%$()\[\]{}|\\]")

SURFACE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "digit_share",
    "numbers_per_word",
    "math_char_share",
    "upper_share",
    "question_marks",
    "lines",
    "mean_word_len",
    "distinct_word_share",
    "negation_cue",
    "compute_cue",
    "sentences",
    "first_person",
    "longest_line_share",
)


def canonical_text(prompt: str) -> str:
    """The prompt without multiple-choice scaffolding, whitespace-trimmed (case kept)."""
    text = _ANSWER_CUE.sub("", prompt)
    return _OPTION_MARK.sub("\n", text).strip()


def word_ngrams(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams of canonical text (bigrams joined by a space)."""
    tokens = _TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def surface_features(text: str) -> npt.NDArray[np.float64]:
    """Length and shape statistics of canonical text, in the order of ``SURFACE_NAMES``."""
    n_chars = len(text) + 1
    words = text.split()
    n_words = len(words) + 1
    lines = text.split("\n")
    # Regex counting runs in C; per-character Python loops cost too much on long prompts.
    digits = len(_DIGIT.findall(text))
    math_chars = len(_MATH_CHAR.findall(text))
    upper = len(_UPPER.findall(text))
    return np.array(
        [
            math.log1p(len(text)),
            math.log1p(len(words)),
            digits / n_chars,
            len(_NUMBER.findall(text)) / n_words,
            math_chars / n_chars,
            upper / n_chars,
            float(text.count("?")),
            float(len(lines)),
            (sum(len(w) for w in words) / len(words)) if words else 0.0,
            len(set(words)) / n_words,
            float(_NEGATION.search(text) is not None),
            float(_COMPUTE.search(text) is not None),
            float(len(_SENTENCE_END.findall(text))),
            float(_FIRST_PERSON.search(text) is not None),
            max(len(line) for line in lines) / n_chars,
        ],
        dtype=np.float64,
    )


def ngram_ids(text: str, vocabulary: dict[str, int]) -> list[int]:
    """Distinct vocabulary indices of the text's word n-grams (unknown n-grams are skipped)."""
    ids = {vocabulary[g] for g in word_ngrams(text) if g in vocabulary}
    return sorted(ids)
