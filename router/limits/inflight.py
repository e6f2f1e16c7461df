"""The router's own overload guard: a cap on requests in flight, refused early with 503.

Past the cap a request is answered at once rather than queued, so a traffic spike costs the
router a quick refusal per request instead of unbounded memory and latency for everyone.
"""

from __future__ import annotations


class InflightLimiter:
    """Counts requests in flight in one event loop; no await in between, so no lock is needed.

    Every successful ``try_acquire`` must be paired with one ``release`` (in a ``finally``, after a
    streamed reply's last frame).
    """

    def __init__(self, max_inflight: int) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self.max_inflight = max_inflight
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    def try_acquire(self) -> bool:
        if self._inflight >= self.max_inflight:
            return False
        self._inflight += 1
        return True

    def release(self) -> None:
        if self._inflight <= 0:
            raise RuntimeError("InflightLimiter.release() without a matching try_acquire()")
        self._inflight -= 1
