"""Training the difficulty classifier and measuring it with cross-validation grouped by domain.

Deterministic: no random state anywhere (vocabulary ties break alphabetically, L-BFGS starts at 0).
Needs scipy (sparse matrices and L-BFGS), imported here only; scoring does not.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from router.difficulty.dataset import LabelledPrompt
from router.difficulty.features import canonical_text, surface_features, word_ngrams
from router.difficulty.metrics import routing_scores
from router.difficulty.scorer import DifficultyClassifier

Label = Literal["helped", "weak_wrong", "helped_vs_weak_right"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    label: Label = "helped"
    # An n-gram must occur in this many distinct domains: words that only name one subject identify
    # the domain and do not carry over to subjects the classifier has never seen.
    min_domains: int = 4
    max_vocabulary: int = 20000
    l2: float = 3.0
    use_ngrams: bool = True
    use_surface: bool = True
    # λ of the score P(helped) - λ P(hurt); 0 leaves the hurt model out. λ = 1 would be the plain
    # expected gain, but it ranks worse under leave-one-domain-out (docs/classifier.md): P(hurt)
    # transfers to unseen domains less reliably than P(helped), so its term is shrunk.
    hurt_weight: float = 0.5


def targets(rows: Sequence[LabelledPrompt], label: Label) -> tuple[FloatArray, FloatArray]:
    """(target, sample weight) per row for the chosen label definition."""
    weak = np.array([r.weak_correct for r in rows])
    strong = np.array([r.strong_correct for r in rows])
    helped = ~weak & strong
    if label == "helped":
        return helped.astype(np.float64), np.ones(len(rows))
    if label == "weak_wrong":
        return (~weak).astype(np.float64), np.ones(len(rows))
    # Both-wrong prompts gain nothing from the cloud; leave them out of training.
    return helped.astype(np.float64), (weak | strong).astype(np.float64)


def hurt_targets(rows: Sequence[LabelledPrompt]) -> FloatArray:
    """1.0 where the cloud answer is worse: the edge model right and the cloud model wrong."""
    return np.array([r.weak_correct and not r.strong_correct for r in rows], dtype=np.float64)


def build_vocabulary(texts: Sequence[str], domains: Sequence[str], config: TrainConfig) -> dict[str, int]:
    seen_in: dict[str, set[str]] = {}
    doc_freq: Counter[str] = Counter()
    for text, domain in zip(texts, domains, strict=True):
        grams = set(word_ngrams(text))
        doc_freq.update(grams)
        for gram in grams:
            seen_in.setdefault(gram, set()).add(domain)
    kept = [g for g, ds in seen_in.items() if len(ds) >= config.min_domains]
    kept.sort(key=lambda g: (-doc_freq[g], g))
    return {g: i for i, g in enumerate(sorted(kept[: config.max_vocabulary]))}


def _design(
    texts: Sequence[str], vocabulary: dict[str, int], surface: FloatArray, config: TrainConfig
) -> object:
    import scipy.sparse as sp

    blocks = []
    if config.use_ngrams:
        indptr, indices, values = [0], [], []
        for text in texts:
            ids = sorted({vocabulary[g] for g in word_ngrams(text) if g in vocabulary})
            indices.extend(ids)
            values.extend([1.0 / math.sqrt(len(ids))] * len(ids))
            indptr.append(len(indices))
        blocks.append(sp.csr_matrix((values, indices, indptr), shape=(len(texts), len(vocabulary))))
    blocks.append(sp.csr_matrix(surface if config.use_surface else np.zeros_like(surface)))
    return sp.hstack(blocks, format="csr")


def _fit_logistic(x: object, y: FloatArray, weight: FloatArray, l2: float) -> tuple[FloatArray, float]:
    from scipy.optimize import minimize

    n_features = x.shape[1]  # type: ignore[attr-defined]
    total = float(weight.sum())

    def loss(params: FloatArray) -> tuple[float, FloatArray]:
        w, b = params[:-1], params[-1]
        z = x @ w + b  # type: ignore[operator]
        log_p = -np.logaddexp(0.0, -z)
        log_q = -np.logaddexp(0.0, z)
        nll = -float(weight @ (y * log_p + (1.0 - y) * log_q)) / total + 0.5 * l2 * float(w @ w) / total
        resid = weight * (np.exp(log_p) - y) / total
        grad = np.append(x.T @ resid + l2 * w / total, resid.sum())  # type: ignore[attr-defined]
        return nll, grad

    result = minimize(loss, np.zeros(n_features + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return np.asarray(result.x[:-1], dtype=np.float64), float(result.x[-1])


def fit_classifier(rows: Sequence[LabelledPrompt], config: TrainConfig) -> DifficultyClassifier:
    texts = [canonical_text(r.prompt) for r in rows]
    vocabulary = build_vocabulary(texts, [r.domain for r in rows], config) if config.use_ngrams else {}
    raw = np.array([surface_features(t) for t in texts])
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale[scale == 0.0] = 1.0
    y, weight = targets(rows, config.label)
    x = _design(texts, vocabulary, (raw - mean) / scale, config)
    coef, bias = _fit_logistic(x, y, weight, config.l2)
    n_vocab = len(vocabulary)
    surface_weights = coef[n_vocab:] if config.use_surface else np.zeros(raw.shape[1])
    hurt_weights, hurt_bias = None, 0.0
    if config.hurt_weight > 0.0:
        import scipy.sparse as sp

        standard = sp.csr_matrix((raw - mean) / scale)
        hurt_weights, hurt_bias = _fit_logistic(standard, hurt_targets(rows), np.ones(len(rows)), config.l2)
    return DifficultyClassifier(
        vocabulary=vocabulary,
        ngram_weights=coef[:n_vocab],
        surface_mean=mean,
        surface_scale=scale,
        surface_weights=surface_weights,
        bias=bias,
        hurt_surface_weights=hurt_weights,
        hurt_bias=hurt_bias,
        hurt_weight=config.hurt_weight,
    )


def out_of_domain_scores(rows: Sequence[LabelledPrompt], config: TrainConfig) -> FloatArray:
    """Leave-one-domain-out: each prompt scored by a model trained without its whole domain."""
    domains = np.array([r.domain for r in rows])
    scores = np.empty(len(rows))
    for domain in sorted(set(domains.tolist())):
        held_out = np.flatnonzero(domains == domain).tolist()
        kept = np.flatnonzero(domains != domain).tolist()
        model = fit_classifier([rows[i] for i in kept], config)
        scores[held_out] = [model.score(rows[i].prompt) for i in held_out]
    return scores


def grouped_cv_report(rows: Sequence[LabelledPrompt], scores: FloatArray) -> dict[str, object]:
    """APGR/CPT of out-of-domain scores: pooled, per source, and averaged within domains."""
    weak = np.array([r.weak_correct for r in rows])
    strong = np.array([r.strong_correct for r in rows])
    sources = np.array([r.source for r in rows])
    domains = np.array([r.domain for r in rows])
    report: dict[str, object] = {"pooled": routing_scores(scores, weak, strong).as_dict()}
    for source in sorted(set(sources.tolist())):
        mask = sources == source
        report[source] = routing_scores(scores[mask], weak[mask], strong[mask]).as_dict()
    within = []
    for domain in sorted(set(domains.tolist())):
        mask = domains == domain
        if weak[mask].mean() != strong[mask].mean():
            within.append(routing_scores(scores[mask], weak[mask], strong[mask]).apgr)
    report["within_domain_mean_apgr"] = round(float(np.mean(within)), 4)
    return report
