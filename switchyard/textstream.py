"""Turning generated token ids into streamed text: incremental decoding and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]

# Byte-level tokenizers decode a partial UTF-8 character to U+FFFD; wait for the rest of it.
_PARTIAL = "\ufffd"


class IncrementalDecoder:
    """Decodes a growing list of token ids, returning only the new text each time.

    Decoding each token alone breaks words for BPE tokenizers (leading-space markers, multi-byte
    characters), so this decodes a short window of recent tokens and diffs it, which keeps the work
    per token constant.
    """

    __slots__ = ("_decode", "_ids", "_prefix_offset", "_read_offset")

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_PARTIAL):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]


class StopMatcher:
    """Holds back text that might be the start of a stop string; reports when one is complete."""

    __slots__ = ("_held", "_longest", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return buf[:cut], True
        # Keep the longest tail that is a proper prefix of some stop string.
        keep = 0
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                keep = n
                break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class ByteTableDecoder:
    """Incremental decoding for byte-level BPE vocabularies: one table look-up per token.

    Each token stands for a fixed byte string, so the reply is those bytes in order, decoded as
    UTF-8 as they arrive (a character split across tokens waits for its last byte). This gives the
    same text as decoding the whole sequence, at a fraction of the cost of ``IncrementalDecoder``.
    """

    __slots__ = ("_table", "_utf8")

    def __init__(self, table: Sequence[bytes]) -> None:
        self._table = table
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        return str(self._utf8.decode(self._table[token_id]))

    def flush(self) -> str:
        return str(self._utf8.decode(b"", final=True))


def _byte_level_alphabet() -> dict[str, int]:
    """The printable stand-in character of each byte in byte-level BPE vocabularies (GPT-2 scheme):
    printable Latin-1 bytes stand for themselves, the others are shifted past 255 in order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + shifted
            shifted += 1
    return {chr(c): b for b, c in chars.items()}


def byte_level_table(vocab: dict[str, int], skipped: set[int], added: dict[int, str]) -> list[bytes]:
    """Bytes of every token id of a byte-level BPE vocabulary; ``skipped`` ids decode to nothing and
    ``added`` (non-special added tokens) to their text as it is."""
    alphabet = _byte_level_alphabet()
    # Added tokens may lie past the model's vocabulary (Qwen2's role markers do): size for all ids.
    table = [b""] * (max([*vocab.values(), *added, *skipped, 0]) + 1)
    for piece, token_id in vocab.items():
        table[token_id] = bytes(alphabet[ch] for ch in piece)
    for token_id, text in added.items():
        table[token_id] = text.encode()
    for token_id in skipped:
        table[token_id] = b""
    return table
