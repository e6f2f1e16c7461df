"""The difficulty classifier used in the router's hot path: how much a prompt needs the cloud, in [0, 1].

Two logistic models share the prompt's features:

* P(helped): the edge model answers wrong and the cloud model right. Word n-grams (binary, scaled
  by 1/sqrt(count)) and standardised surface statistics.
* P(hurt): the edge model answers right and the cloud model wrong. Surface statistics only.

The score is the cloud's expected benefit with the hurt term shrunk by ``hurt_weight`` (λ),
``P(helped) - λ P(hurt)``, mapped from [-λ, 1] onto [0, 1]; with λ = 0 it is P(helped) itself.
Loading reads one ``.npz``; scoring needs only numpy and takes well under a millisecond. The routing
threshold is policy and lives outside this class.
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
FORMAT_VERSION = 3  # 3 added the hurt model; a version 2 file loads as hurt_weight = 0
_SUPPORTED_VERSIONS = (2, 3)


def _sigmoid(z: float) -> float:
    # Split by sign so exp never overflows on extreme logits.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class DifficultyClassifier:
    """Weights of the logistic difficulty model; build with ``load`` or ``train.fit_classifier``."""

    vocabulary: dict[str, int]
    ngram_weights: npt.NDArray[np.float64]
    surface_mean: npt.NDArray[np.float64]
    surface_scale: npt.NDArray[np.float64]
    surface_weights: npt.NDArray[np.float64]
    bias: float
    # The P(hurt) model over the same standardised surface statistics, and its weight λ in the score.
    hurt_surface_weights: npt.NDArray[np.float64] | None = None
    hurt_bias: float = 0.0
    hurt_weight: float = 0.0
    # The same weights as plain Python floats, for scoring one prompt (numpy's per-call overhead
    # outweighs the arithmetic here): n-gram -> weight, and the standardisation folded into the
    # surface weights (x - mean) / scale . w = x . (w / scale) - mean . (w / scale).
    _term_weight: dict[str, float] = field(init=False, repr=False, compare=False)
    _surface_coef: list[float] = field(init=False, repr=False, compare=False)
    _surface_offset: float = field(init=False, repr=False, compare=False)
    _hurt_coef: list[float] = field(init=False, repr=False, compare=False)
    _hurt_offset: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ngram_weights.shape != (len(self.vocabulary),):
            raise ValueError("ngram_weights must have one weight per vocabulary entry")
        shape = (len(SURFACE_NAMES),)
        if not self.surface_mean.shape == self.surface_scale.shape == self.surface_weights.shape == shape:
            raise ValueError(f"surface arrays must have shape {shape}")
        if not (math.isfinite(self.hurt_weight) and self.hurt_weight >= 0.0):
            raise ValueError("hurt_weight must be a finite number >= 0")
        if self.hurt_weight > 0.0 and (
            self.hurt_surface_weights is None or self.hurt_surface_weights.shape != shape
        ):
            raise ValueError(f"a hurt_weight above 0 needs hurt_surface_weights of shape {shape}")
        weights = self.ngram_weights.tolist()
        coef = self.surface_weights / self.surface_scale
        object.__setattr__(self, "_term_weight", {t: weights[i] for t, i in self.vocabulary.items()})
        object.__setattr__(self, "_surface_coef", coef.tolist())
        object.__setattr__(self, "_surface_offset", float(self.surface_mean @ coef))
        hurt = self.hurt_surface_weights if self.hurt_weight > 0.0 else None
        hurt_coef = np.zeros(shape) if hurt is None else hurt / self.surface_scale
        object.__setattr__(self, "_hurt_coef", hurt_coef.tolist())
        object.__setattr__(self, "_hurt_offset", float(self.surface_mean @ hurt_coef))

    @classmethod
    def load(cls, path: Path | None = None) -> DifficultyClassifier:
        """Load weights saved by ``save``; the default is the artifact shipped in this package."""
        with np.load(path or DEFAULT_MODEL, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version not in _SUPPORTED_VERSIONS:
                raise ValueError(
                    f"unsupported difficulty model format {version}, expected one of {_SUPPORTED_VERSIONS}"
                )
            terms = [str(t) for t in data["vocabulary"]]
            has_hurt = version >= 3
            return cls(
                vocabulary={term: i for i, term in enumerate(terms)},
                ngram_weights=data["ngram_weights"].astype(np.float64),
                surface_mean=data["surface_mean"].astype(np.float64),
                surface_scale=data["surface_scale"].astype(np.float64),
                surface_weights=data["surface_weights"].astype(np.float64),
                bias=float(data["bias"]),
                hurt_surface_weights=data["hurt_surface_weights"].astype(np.float64) if has_hurt else None,
                hurt_bias=float(data["hurt_bias"]) if has_hurt else 0.0,
                hurt_weight=float(data["hurt_weight"]) if has_hurt else 0.0,
            )

    def save(self, path: Path) -> None:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        hurt = (
            np.zeros(len(SURFACE_NAMES)) if self.hurt_surface_weights is None else self.hurt_surface_weights
        )
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
                hurt_surface_weights=hurt.astype(np.float32),
                hurt_bias=np.float64(self.hurt_bias),
                hurt_weight=np.float64(self.hurt_weight),
            )

    def score(self, prompt: str) -> float:
        """How much ``prompt`` needs the cloud, in [0, 1]; see the module docstring."""
        text = canonical_text(prompt)
        weight = self._term_weight
        # Each distinct known n-gram once (binary features), scaled by 1/sqrt(how many).
        found = [w for g in set(word_ngrams(text)) if (w := weight.get(g)) is not None]
        z = self.bias - self._surface_offset
        if found:
            z += math.fsum(found) / math.sqrt(len(found))
        values = surface_values(text)
        helped = _sigmoid(z + sum(map(operator.mul, values, self._surface_coef)))
        lam = self.hurt_weight
        if lam == 0.0:
            return helped
        z_hurt = self.hurt_bias - self._hurt_offset + sum(map(operator.mul, values, self._hurt_coef))
        return (helped - lam * _sigmoid(z_hurt) + lam) / (1.0 + lam)
