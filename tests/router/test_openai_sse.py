from __future__ import annotations

import pytest

from router.upstream.openai_client import _SSEState


def test_chunks_give_text_finish_and_usage() -> None:
    state = _SSEState()
    texts: list[str] = []
    lines = [
        b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n',
        b": keep-alive comment\n",
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n',
        b'data: {"choices":[{"delta":{"content":"lo \xc3\xa9"},"finish_reason":"stop"}]}\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n',
        b"data: [DONE]\n",
    ]
    assert all(state.feed(line, texts) is None for line in lines)
    assert texts == ["Hel", "lo é"]
    assert (state.finish, state.prompt_tokens, state.completion_tokens, state.chunks, state.done) == (
        "stop",
        7,
        2,
        2,
        True,
    )


@pytest.mark.parametrize("line", [b"data: {not json\n", b"data: [1, 2]\n", b'data: "text"\n'])
def test_an_event_that_is_not_a_json_object_is_a_typed_error(line: bytes) -> None:
    err = _SSEState().feed(line, [])
    assert err is not None and err.code == "bad_upstream_event"


def test_an_upstream_error_event_keeps_its_code() -> None:
    err = _SSEState().feed(b'data: {"error":{"code":"overloaded","message":"busy"}}\n', [])
    assert err is not None and (err.code, err.message) == ("overloaded", "busy")
