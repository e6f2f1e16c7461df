"""The difficulty classifier used in the router's hot path: P(the cloud model is needed) in [0, 1].

A logistic model over word n-grams (binary, scaled by 1/sqrt(count)) and standardised surface
statistics. Loading reads one ``.npz``; scoring needs only numpy and takes well under a millisecond.
The routing threshold is policy and lives outside this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.difficulty.features import SURFACE_NAMES, canonical_text, ngram_ids, surface_features

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

    def __post_init__(self) -> None:
        if self.ngram_weights.shape != (len(self.vocabulary),):
            raise ValueError("ngram_weights must have one weight per vocabulary entry")
        shape = (len(SURFACE_NAMES),)
        if not self.surface_mean.shape == self.surface_scale.shape == self.surface_weights.shape == shape:
            raise ValueError(f"surface arrays must have shape {shape}")

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
        ids = ngram_ids(text, self.vocabulary)
        z = self.bias
        if ids:
            z += float(self.ngram_weights[ids].sum()) / math.sqrt(len(ids))
        surface = (surface_features(text) - self.surface_mean) / self.surface_scale
        return z + float(surface @ self.surface_weights)

    def score(self, prompt: str) -> float:
        """P(the cloud model is needed) for one prompt, in [0, 1]."""
        z = self.logit(prompt)
        # Split by sign so exp never overflows on extreme logits.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
