"""Prompt features for the difficulty classifier: canonical text, word n-grams and surface statistics.

The surface statistics come in two groups: whole-text shape (length, digits, symbols, a few cue
words) and the layout of the prompt's lines. The line group reads the longest line as the stem and
the lines after it as the answer lines (options, lists); for a prompt of one line they are zero.

Only the standard library and numpy, so the router's hot path can score without training tools.
Training and scoring call the same functions here, so the two cannot drift apart.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

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
_MATH_BYTES = b"-+*/=^<>%$()[]{}|\\"  # math and bracket characters, counted on the UTF-8 bytes
_UPPER_BYTES = bytes(range(ord("A"), ord("Z") + 1))
_DIGIT_BYTES = b"0123456789"
_WORD = re.compile(r"[A-Za-z]+")
_LONG_WORD = re.compile(r"[a-z]{8,}")
# An answer line that joins two short judgments ("True, False", "Wrong, Not wrong"): the prompt asks
# for two decisions at once, and both must be right.
_PAIR_LINE = re.compile(r"^\s*[A-Za-z][A-Za-z ]{0,20},\s*[A-Za-z][A-Za-z ]{0,20}\s*$")
_NUMERIC_LINE = re.compile(r"^[\s$\u20ac\u00a3\-+]*\d[\d.,/%\s^*x\u00d7\-+a-z]*$", re.I)
_NAME_MID_SENTENCE = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+")
# Question-type cue words, counted from one pass over the lower-cased words (a regex per cue list
# costs ~20 us each on long prompts; the hot path cannot afford that).
_JUDGEMENT_WORDS = frozenset(
    "most best least primarily mainly strongest weakest greatest likely probably".split()
)
_RECALL_WORDS = frozenset("who when where named called term".split())
_RECALL_PHRASES = ("which year", "known as", "defined as", "refers to")
_REASONING_WORDS = frozenset(
    "if then because therefore assume suppose given would implies must valid argument".split()
)
_QUANTITY_WORDS = frozenset(
    "each per total percent times twice half remaining average rate ratio every left".split()
)
_NOT_WORDS = frozenset("not no never none neither nor cannot".split())
_QUOTE = re.compile("[\"\u201c\u201d'\u2018\u2019]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Numbers past this are all "huge"; the cap also keeps float() of a 400-digit number finite.
_NUMBER_CAP = 1e12

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
    # Line layout: the stem (up to the longest line) and the answer lines after it.
    "pipes",
    "pair_line_share",
    "numeric_line_share",
    "short_line_share",
    "log_answer_line_chars",
    "answer_line_length_cv",
    "longest_answer_to_stem",
    "stem_answer_overlap",
    "log_stem_words",
    # Reading level and question type.
    "words_per_sentence",
    "long_word_share",
    "names_per_word",
    "judgement_cue",
    "recall_cue",
    "reasoning_cues_per_word",
    "quantity_cues_per_word",
    "not_words",
    "distinct_numbers",
    "log_largest_number",
    "quotes",
    "non_ascii_share",
    "colons",
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
    return np.array(surface_values(text), dtype=np.float64)


def surface_values(text: str) -> list[float]:
    """``surface_features`` as a list: the scorer combines them in plain Python, which on one
    prompt is faster than numpy's per-call overhead."""
    n_chars = len(text) + 1
    words = text.split()
    n_words = len(words) + 1
    lines = text.split("\n")
    # Counting runs in C; per-character Python loops cost too much on long prompts. The character
    # classes that are pure ASCII are counted on the UTF-8 bytes, where deleting them is one cheap
    # pass (a byte below 0x80 is always a whole character in UTF-8, so the counts are exact).
    raw = text.encode()
    math_chars = len(raw) - len(raw.translate(None, _MATH_BYTES))
    upper = len(raw) - len(raw.translate(None, _UPPER_BYTES))
    # \d also matches non-ASCII digits, so the byte count stands in only for ASCII text.
    if text.isascii():
        digits = len(raw) - len(raw.translate(None, _DIGIT_BYTES))
    else:
        digits = len(_DIGIT.findall(text))
    numbers = _NUMBER.findall(text)
    sentences = len(_SENTENCE_END.findall(text))
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        digits / n_chars,
        len(numbers) / n_words,
        math_chars / n_chars,
        upper / n_chars,
        float(text.count("?")),
        float(len(lines)),
        (sum(map(len, words)) / len(words)) if words else 0.0,
        len(set(words)) / n_words,
        float(_NEGATION.search(text) is not None),
        float(_COMPUTE.search(text) is not None),
        float(sentences),
        float(_FIRST_PERSON.search(text) is not None),
        max(len(line) for line in lines) / n_chars,
        *_layout_features(text, lines),
        *_reading_features(text, numbers, sentences),
    ]


def _layout_features(text: str, lines: list[str]) -> list[float]:
    kept = [line for line in lines if line.strip()] or [""]
    lengths = [len(line) for line in kept]
    longest = lengths.index(max(lengths))
    answers = kept[longest + 1 :]
    n_answers = len(answers) + 1
    # Plain Python on a handful of lines: numpy's per-call overhead is larger than the work here.
    stem_words = set(_WORD.findall("\n".join(kept[: longest + 1]).lower()))
    answer_words = set(_WORD.findall("\n".join(answers).lower()))
    answer_shape = [0.0, 0.0, 0.0]
    if answers:
        tail = lengths[longest + 1 :]
        mean = sum(tail) / len(tail)
        std = math.sqrt(sum((x - mean) ** 2 for x in tail) / len(tail))
        answer_shape = [math.log1p(mean), std / (mean + 1.0), max(tail) / (lengths[longest] + 1.0)]
    return [
        float(text.count("|")),
        sum(_PAIR_LINE.match(line) is not None for line in answers) / n_answers,
        sum(_NUMERIC_LINE.match(line) is not None for line in answers) / n_answers,
        sum(len(line.split()) <= 3 for line in answers) / n_answers,
        *answer_shape,
        len(stem_words & answer_words) / (len(answer_words) + 1),
        math.log1p(sum(len(line.split()) for line in kept[: longest + 1])),
    ]


def _reading_features(text: str, numbers: list[str], sentences: int) -> list[float]:
    lower = text.lower()
    words = _WORD.findall(lower)
    n_words = len(words) + 1
    counts = Counter(words)
    present = counts.keys()
    values = [float(n.replace(",", "")) for n in numbers if n.count(".") <= 1]
    recall = bool(present & _RECALL_WORDS) or any(p in lower for p in _RECALL_PHRASES)
    if text.isascii():  # most prompts: the same counts without two more regex passes
        quotes, non_ascii = text.count('"') + text.count("'"), 0
    else:
        quotes, non_ascii = len(_QUOTE.findall(text)), len(_NON_ASCII.findall(text))
    return [
        len(words) / max(1, sentences),
        len(_LONG_WORD.findall(lower)) / n_words,
        len(_NAME_MID_SENTENCE.findall(text)) / n_words,
        float(bool(present & _JUDGEMENT_WORDS)),
        float(recall),
        sum(counts[w] for w in present & _REASONING_WORDS) / n_words,
        sum(counts[w] for w in present & _QUANTITY_WORDS) / n_words,
        float(sum(counts[w] for w in present & _NOT_WORDS)),
        float(len(set(numbers))),
        math.log1p(min(max(values), _NUMBER_CAP)) if values else 0.0,
        float(quotes),
        non_ascii / (len(text) + 1),
        float(text.count(":")),
    ]
