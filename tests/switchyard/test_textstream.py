"""Incremental decoding and stop strings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from switchyard.sampling import Sampler
from switchyard.textstream import IncrementalDecoder, StopMatcher
from switchyard.wire import SamplingParams

VOCAB = ["Hello", " wor", "ld", "!", " ", "\u00e9"]


def _decode(ids: Sequence[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def test_incremental_decoder_emits_each_piece_once() -> None:
    dec = IncrementalDecoder(_decode)
    out = "".join(dec.push(i) for i in [0, 1, 2, 3, 4, 5])
    assert out == "Hello world! \u00e9"


def test_partial_utf8_is_held_back() -> None:
    pieces = {0: "a", 1: "\ufffd", 2: "b"}

    def decode(ids: Sequence[int]) -> str:
        text = "".join(pieces[i] for i in ids)
        return text.replace("\ufffdb", "\u00e9")  # tokens 1+2 form one character

    dec = IncrementalDecoder(decode)
    assert dec.push(0) == "a"
    assert dec.push(1) == ""
    assert dec.push(2) == "\u00e9"


def test_stop_matcher_cuts_at_stop_across_chunks() -> None:
    m = StopMatcher(["END"])
    assert m.feed("hello E") == ("hello ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("D and more") == ("", True)


def test_stop_matcher_releases_false_alarm() -> None:
    m = StopMatcher(["END"])
    assert m.feed("E") == ("", False)
    assert m.feed("x") == ("Ex", False)
    assert m.flush() == ""


def test_greedy_and_seeded_sampling() -> None:
    logits = np.array([0.1, 3.0, 0.5, 2.9], dtype=np.float32)
    assert Sampler(SamplingParams()).pick(logits) == 1
    a = [Sampler(SamplingParams(temperature=1.0, seed=7)).pick(logits) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same first pick
    s = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=1))
    assert {s.pick(logits) for _ in range(50)} <= {1, 3}
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.01, seed=1))
    assert {s.pick(logits) for _ in range(20)} == {1}


def test_byte_table_decoding_equals_whole_sequence_decoding(demo_models: object) -> None:
    import random

    from switchyard.textstream import ByteTableDecoder
    from switchyard.tokenizer import ChatTokenizer

    tok = ChatTokenizer(demo_models.edge)  # type: ignore[attr-defined]
    assert tok.byte_table is not None  # the demo tokenizer is byte-level BPE
    draw = random.Random(0)
    for _ in range(500):
        ids = [draw.randrange(tok.vocab_size) for _ in range(draw.randrange(1, 40))]
        stream = ByteTableDecoder(tok.byte_table)
        assert "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)


def test_byte_table_holds_back_a_split_character() -> None:
    from switchyard.textstream import ByteTableDecoder

    stream = ByteTableDecoder([b"a", "\u00e9".encode()[:1], "\u00e9".encode()[1:]])
    assert stream.push(0) == "a"
    assert stream.push(1) == ""
    assert stream.push(2) == "\u00e9"


def test_byte_table_covers_special_tokens_past_the_vocabulary() -> None:
    """Qwen2's role markers have ids after the BPE vocabulary's; they decode to nothing."""
    from switchyard.textstream import byte_level_table

    table = byte_level_table({"a": 0, "\u0120b": 1}, skipped={5, 6}, added={3: "<tool>"})
    assert table == [b"a", b" b", b"", b"<tool>", b"", b"", b""]
