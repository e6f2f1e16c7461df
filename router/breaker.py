"""Per-node circuit breaker with outlier ejection, as a small pure state machine.

A node is ejected (the circuit opens) after ``max_consecutive`` failures in a row, or when more
than ``max_failure_rate`` of its last ``window`` outcomes failed. It stays out for a cool-down that
doubles with each ejection in a row (capped), then gets one trial request (half-open): success
closes the circuit, failure ejects it again. Time comes from the caller, so tests drive it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    max_consecutive: int = 3
    window: int = 20
    max_failure_rate: float = 0.5
    min_window: int = 10  # outcomes needed before the rate counts
    cooldown_s: float = 2.0
    max_cooldown_s: float = 30.0


@dataclass
class CircuitBreaker:
    config: BreakerConfig = field(default_factory=BreakerConfig)
    consecutive: int = 0
    ejections: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False
    outcomes: deque[bool] = field(default_factory=deque)  # True = failure

    def available(self, now: float) -> bool:
        """May a new request go to this node? Closed: yes; open: no; half-open: if no trial is out."""
        if not self.ejections:
            return True
        return now >= self.open_until and not self.trial_in_flight

    def claim(self, now: float) -> None:
        """A request is being sent to this node: in half-open state it is the one trial."""
        if self.ejections and now >= self.open_until:
            self.trial_in_flight = True

    def record(self, failed: bool, now: float) -> None:
        self.outcomes.append(failed)
        if len(self.outcomes) > self.config.window:
            self.outcomes.popleft()
        was_trial = self.trial_in_flight
        self.trial_in_flight = False
        if not failed:
            self.consecutive = 0
            if was_trial:
                self.ejections = 0
                self.outcomes.clear()
            return
        self.consecutive += 1
        rate_bad = (
            len(self.outcomes) >= self.config.min_window
            and sum(self.outcomes) / len(self.outcomes) > self.config.max_failure_rate
        )
        if was_trial or self.consecutive >= self.config.max_consecutive or rate_bad:
            self.ejections += 1
            cooldown = min(self.config.max_cooldown_s, self.config.cooldown_s * 2 ** (self.ejections - 1))
            self.open_until = now + cooldown
            self.consecutive = 0
            self.outcomes.clear()

    @property
    def ejected(self) -> bool:
        return self.ejections > 0
