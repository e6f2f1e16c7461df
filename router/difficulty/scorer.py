"""The difficulty classifier used in the router's hot path: P(the cloud model is needed) in [0, 1].

A logistic model over word n-grams (binary, scaled by 1/sqrt(count)) and standardised surface
statistics. Loading reads one ``.npz``; scoring needs only numpy and takes well under a millisecond.
The routing threshold is policy and lives outside this class.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.difficulty.features import SURFACE_NAMES, canonical_text, surface_values, word_ngrams

DEFAULT_MODEL = Path(__file__).resolve().parent / "model.npz"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DifficultyClassifier:
    """Weights of the logistic difficulty model; build with ``load`` or ``train.fit_classifier``."""

    vocabulary: dict[str, int]
    ngram_weights: npt.NDArray[np.float64]
    surface_mean: npt.NDArray[np.float64]
    surface_scale: npt.NDArray[np.float64]
    surface_weights: npt.NDArray[np.float64]
    bias: float
    # The same weights as plain Python floats, for scoring one prompt (numpy's per-call overhead
    # outweighs the arithmetic here): n-gram -> weight, and the standardisation folded into the
    # surface weights (x - mean) / scale . w = x . (w / scale) - mean . (w / scale).
    _term_weight: dict[str, float] = field(init=False, repr=False, compare=False)
    _surface_coef: list[float] = field(init=False, repr=False, compare=False)
    _surface_offset: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ngram_weights.shape != (len(self.vocabulary),):
            raise ValueError("ngram_weights must have one weight per vocabulary entry")
        shape = (len(SURFACE_NAMES),)
        if not self.surface_mean.shape == self.surface_scale.shape == self.surface_weights.shape == shape:
            raise ValueError(f"surface arrays must have shape {shape}")
        weights = self.ngram_weights.tolist()
        coef = self.surface_weights / self.surface_scale
        object.__setattr__(self, "_term_weight", {t: weights[i] for t, i in self.vocabulary.items()})
        object.__setattr__(self, "_surface_coef", coef.tolist())
        object.__setattr__(self, "_surface_offset", float(self.surface_mean @ coef))

    @classmethod
    def load(cls, path: Path | None = None) -> DifficultyClassifier:
        """Load weights saved by ``save``; the default is the artifact shipped in this package."""
        with np.load(path or DEFAULT_MODEL, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"unsupported difficulty model format {version}, expected {FORMAT_VERSION}")
            terms = [str(t) for t in data["vocabulary"]]
            return cls(
                vocabulary={term: i for i, term in enumerate(terms)},
                ngram_weights=data["ngram_weights"].astype(np.float64),
                surface_mean=data["surface_mean"].astype(np.float64),
                surface_scale=data["surface_scale"].astype(np.float64),
                surface_weights=data["surface_weights"].astype(np.float64),
                bias=float(data["bias"]),
            )

    def save(self, path: Path) -> None:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(
                handle,
                format_version=np.int64(FORMAT_VERSION),
                vocabulary=np.array(terms, dtype=np.str_),
                ngram_weights=self.ngram_weights.astype(np.float32),
                surface_mean=self.surface_mean.astype(np.float32),
                surface_scale=self.surface_scale.astype(np.float32),
                surface_weights=self.surface_weights.astype(np.float32),
                bias=np.float64(self.bias),
            )

    def logit(self, prompt: str) -> float:
        text = canonical_text(prompt)
        weight = self._term_weight
        # Each distinct known n-gram once (binary features), scaled by 1/sqrt(how many).
        found = [w for g in set(word_ngrams(text)) if (w := weight.get(g)) is not None]
        z = self.bias - self._surface_offset
        if found:
            z += math.fsum(found) / math.sqrt(len(found))
        surface: float = sum(map(operator.mul, surface_values(text), self._surface_coef))
        return z + surface

    def score(self, prompt: str) -> float:
        """P(the cloud model is needed) for one prompt, in [0, 1]."""
        z = self.logit(prompt)
        # Split by sign so exp never overflows on extreme logits.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
