"""Admission control: per-key request rates and token budgets, and the router's own in-flight cap."""

from router.limits.base import Admission, Admitted, Limited, RateLimiter
from router.limits.config import KeyLimits, LimitsConfig
from router.limits.inflight import InflightLimiter

__all__ = ["Admission", "Admitted", "InflightLimiter", "KeyLimits", "Limited", "LimitsConfig", "RateLimiter"]
