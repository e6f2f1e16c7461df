"""Next-token selection from logits: greedy, temperature, top-k and top-p, seeded per sequence."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from switchyard.wire import SamplingParams


class Sampler:
    """Picks tokens for one sequence; holds that sequence's random generator so a seed replays."""

    __slots__ = ("_params", "_rng")

    def __init__(self, params: SamplingParams) -> None:
        self._params = params
        # Greedy picks need no generator, and making one (OS entropy when unseeded) costs ~10 us.
        self._rng = np.random.default_rng(params.seed) if params.temperature > 0.0 else None

    def pick(self, logits: npt.NDArray[np.float32]) -> int:
        p = self._params
        if p.temperature <= 0.0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < scaled.shape[0]:
            kth = np.partition(scaled, -p.top_k)[-p.top_k]
            scaled = np.where(scaled < kth, -np.inf, scaled)
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            keep = int(np.searchsorted(cumulative, p.top_p) + 1)
            mask = np.zeros_like(probs)
            mask[order[:keep]] = 1.0
            probs = probs * mask
            probs /= probs.sum()
        assert self._rng is not None  # made whenever temperature > 0
        return int(self._rng.choice(probs.shape[0], p=probs))
