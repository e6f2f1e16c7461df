"""Piecewise chat encoding: the same ids as encoding the whole text, or not used at all."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from switchyard import token_segments
from switchyard.token_segments import SegmentEncoder
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage

SPECIAL = ("<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>")
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
ALPHABET = "abcdefgh  \n\t.,!?0123\u00e9\u4e2d\U0001f600"


def _chat(draw: random.Random, turns: int) -> list[ChatMessage]:
    def text() -> str:
        return "".join(draw.choice(ALPHABET) for _ in range(draw.randint(0, 120)))

    return [ChatMessage("user" if i % 2 == 0 else "assistant", text()) for i in range(turns)]


def _model_dir(tmp_path: Path, pre_tokenizer: Any, *, rstrip: bool = False) -> Path:
    """A small BPE tokenizer trained here, with role markers as added special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    corpus = ["".join(random.Random(i).choice(ALPHABET) for _ in range(200)) for i in range(50)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=[]))
    tok.add_special_tokens([AddedToken(t, rstrip=rstrip, normalized=False) for t in SPECIAL])
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "chat_template": TEMPLATE}
    (tmp_path / "tokenizer_config.json").write_text(__import__("json").dumps(config))
    return tmp_path


def _byte_level(tmp_path: Path, **kw: Any) -> Path:
    from tokenizers import pre_tokenizers

    return _model_dir(tmp_path, pre_tokenizers.ByteLevel(add_prefix_space=False), **kw)


def test_piecewise_ids_equal_whole_text_ids(tmp_path: Path) -> None:
    tok = ChatTokenizer(_byte_level(tmp_path))
    assert tok._segments is not None and tok._segments.enabled
    draw = random.Random(1)
    history: list[ChatMessage] = []
    for _ in range(12):  # a growing conversation: each turn repeats the earlier ones
        history += _chat(draw, 2)
        text = tok.render(history)
        assert tok.encode_chat(history) == tok._encode_whole(text)
    assert tok._segments.enabled  # the first inputs were checked both ways and agreed


def test_the_demo_tokenizer_encodes_piecewise(demo_models: object) -> None:
    tok = ChatTokenizer(demo_models.edge)  # type: ignore[attr-defined]
    assert tok._segments is not None
    draw = random.Random(2)
    for turns in (1, 5, 20):
        chat = _chat(draw, turns)
        assert tok.encode_chat(chat) == tok._encode_whole(tok.render(chat))


def test_added_tokens_that_strip_spaces_turn_it_off(tmp_path: Path) -> None:
    tok = ChatTokenizer(_byte_level(tmp_path, rstrip=True))
    assert tok._segments is None
    chat = _chat(random.Random(3), 6)
    assert tok.encode_chat(chat) == tok._encode_whole(tok.render(chat))


def test_a_pre_tokenizer_that_marks_the_start_fails_the_self_check(tmp_path: Path) -> None:
    """SentencePiece-style prefix space on the first piece only: piecewise ids would differ."""
    from tokenizers import pre_tokenizers

    tok = ChatTokenizer(_model_dir(tmp_path, pre_tokenizers.Metaspace(prepend_scheme="first")))
    assert tok._segments is None
    chat = _chat(random.Random(4), 6)
    assert tok.encode_chat(chat) == tok._encode_whole(tok.render(chat))


def test_a_difference_on_a_real_input_turns_it_off() -> None:
    """A tokenizer the samples did not catch: the first real inputs are encoded both ways."""

    def encode(text: str) -> list[int]:  # pieces and whole texts disagree once a text is long
        return [len(text) // 300]

    encoder = SegmentEncoder(encode, {"<|user|>": 7})
    text = "<|user|>" + "x" * 400 + "<|user|>" + "y" * 400
    assert encoder.encode(text) == [2]  # the whole text's ids
    assert not encoder.enabled
    assert encoder.encode(text) == [2]


def test_short_texts_are_encoded_whole() -> None:
    calls: list[str] = []

    def encode(text: str) -> list[int]:
        calls.append(text)
        return [len(text)]

    encoder = SegmentEncoder(encode, {"<|user|>": 7})
    assert encoder.encode("<|user|>hi") == [10]
    assert calls == ["<|user|>hi"]


def test_the_piece_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_segments, "MAX_ENTRIES", 10)
    monkeypatch.setattr(token_segments, "CHECKED_INPUTS", 0)
    encoder = SegmentEncoder(lambda text: [ord(c) for c in text], {"<|user|>": 0})
    for i in range(50):
        text = "<|user|>".join(f"{i}-{j}-" + "z" * 60 for j in range(5))
        assert encoder.encode(text) == [0 if part == "<|user|>" else ord(part) for part in _chars(text)]
    assert len(encoder._cache) <= 10


def _chars(text: str) -> list[str]:
    out: list[str] = []
    for i, piece in enumerate(text.split("<|user|>")):
        if i:
            out.append("<|user|>")
        out.extend(piece)
    return out
