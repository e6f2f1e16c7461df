"""Counting tokens for routing decisions and context trimming, without the model at hand.

With a ``tokenizer.json`` configured (the edge model's, say) counts are exact for that model;
without one a length-based estimate is used, which is what most gateways do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from switchyard.wire import ChatMessage

# Per-message overhead of role markers in typical chat templates.
_MESSAGE_OVERHEAD = 4


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class EstimatingCounter:
    """About four characters a token, as for English under common BPE vocabularies."""

    def count(self, text: str) -> int:
        return max(1, (len(text) + 3) // 4) if text else 0


class TokenizerCounter:
    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


def conversation_tokens(counter: TokenCounter, messages: Sequence[ChatMessage]) -> int:
    return sum(counter.count(m.content) + _MESSAGE_OVERHEAD for m in messages)


def trim_to_window(
    counter: TokenCounter, messages: Sequence[ChatMessage], budget: int
) -> tuple[ChatMessage, ...]:
    """Drop the oldest turns (never system messages, never the last) until the rest fit ``budget``."""
    kept = list(messages)
    sizes = [counter.count(m.content) + _MESSAGE_OVERHEAD for m in kept]
    total = sum(sizes)
    i = 0
    while total > budget and i < len(kept) - 1:
        if kept[i].role == "system":
            i += 1
            continue
        total -= sizes.pop(i)
        kept.pop(i)
    return tuple(kept)
