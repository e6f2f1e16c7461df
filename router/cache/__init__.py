"""Exact-match prompt cache: one interface, an in-memory and a Redis implementation."""

from router.cache.base import CachedReply, PromptCache, cache_key, cacheable, storable

__all__ = ["CachedReply", "PromptCache", "cache_key", "cacheable", "storable"]
