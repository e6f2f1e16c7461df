"""Encoding a rendered chat piece by piece: the text between special tokens, each piece cached.

A conversation's next turn repeats every earlier message, so re-encoding the whole rendered chat
costs more with every turn (about 1 ms for 900 tokens on the demo tokenizer, a third of a follow-up
turn's time to first token when the node already holds the conversation's keys and values). The
tokenizer splits its input at added tokens (role markers, BOS/EOS) before anything else, so the
ids of a chat are the ids of its pieces between those tokens, joined with the tokens' own ids. The
pieces of earlier messages are then found in a bounded LRU cache and only the new ones are encoded.

That holds only when encoding a piece alone gives the ids it gets inside the whole text. Added
tokens that strip neighbouring spaces, and pre-tokenizers that treat the start of the input
specially (SentencePiece's prefix space), break it. So ``SegmentEncoder.build`` refuses tokenizers
whose added tokens strip or normalise, the encoder compares both ways on sample chats when it is
built, and it compares both ways again on the first real inputs; any difference turns it off for
good, and the whole text is encoded in one call as before.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# Below this many characters one call encodes the text about as fast as the pieces could be looked up.
MIN_CHARS = 256
CHECKED_INPUTS = 8  # real inputs encoded both ways before the encoder trusts itself
MAX_ENTRIES = 8192
MAX_CHARS = 2_000_000  # about 500k tokens: some 20 MB of ids at most


class SegmentEncoder:
    """``encode(text)`` as the tokenizer would, reusing the ids of pieces it has seen."""

    def __init__(self, encode: Callable[[str], list[int]], added: dict[str, int]) -> None:
        self._encode = encode
        self._added = added
        # Longest first: at one position the longest added token wins, as in the tokenizer.
        alternatives = sorted(added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self._unchecked = CHECKED_INPUTS
        self.enabled = True

    @classmethod
    def build(
        cls, encode: Callable[[str], list[int]], added_tokens: dict[int, Any], samples: Sequence[str]
    ) -> SegmentEncoder | None:
        """An encoder for a tokenizer's ``get_added_tokens_decoder()``; ``None`` where it cannot be exact."""
        if not added_tokens:
            return None
        for token in added_tokens.values():
            if token.lstrip or token.rstrip or token.single_word or token.normalized:
                return None
        encoder = cls(encode, {token.content: i for i, token in added_tokens.items()})
        for sample in samples:
            if encoder._pieces(sample) != encode(sample):
                return None
        return encoder

    def encode(self, text: str) -> list[int]:
        if not self.enabled or len(text) < MIN_CHARS:
            return self._encode(text)
        ids = self._pieces(text)
        if self._unchecked > 0:
            whole = self._encode(text)
            with self._lock:
                self._unchecked -= 1
            if ids != whole:
                self.enabled = False
                log.warning("piecewise encoding differs from whole-text encoding; encoding whole texts")
                return whole
        return ids

    def _pieces(self, text: str) -> list[int]:
        ids: list[int] = []
        added = self._added
        for i, piece in enumerate(self._split.split(text)):
            if i % 2:  # the split's captured group: an added token
                ids.append(added[piece])
            elif piece:
                ids.extend(self._piece(piece))
        return ids

    def _piece(self, piece: str) -> tuple[int, ...]:
        with self._lock:
            found = self._cache.get(piece)
            if found is not None:
                self._cache.move_to_end(piece)
                return found
        ids = tuple(self._encode(piece))
        with self._lock:
            if piece not in self._cache:
                self._cache[piece] = ids
                self._chars += len(piece)
                while len(self._cache) > MAX_ENTRIES or self._chars > MAX_CHARS:
                    old, _ = self._cache.popitem(last=False)
                    self._chars -= len(old)
        return ids
