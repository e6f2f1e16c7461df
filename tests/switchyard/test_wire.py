"""The node protocol's messages: round trips and refusal of malformed frames."""

from __future__ import annotations

import msgpack
import pytest

from switchyard import wire
from switchyard.wire import ChatMessage, SamplingParams


@pytest.mark.parametrize(
    "msg",
    [
        wire.Hello(wire.PROTOCOL_VERSION, "r1", "s3cret"),
        wire.Welcome(1, "edge-1", "edge", "m", 1024, 16),
        wire.Generate(
            7, (ChatMessage("user", "hi ☃"),), SamplingParams(max_tokens=5, stop=("\n",)), "s_x", "r"
        ),
        wire.Cancel(7),
        wire.Delta(7, "tok", 2),
        wire.Done(7, "stop", 10, 3),
        wire.Error(7, "overloaded", "busy"),
        wire.Load(1, 2, 16, ("s_a",)),
    ],
)
def test_round_trip(msg: wire.Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


def test_frame_is_the_map_of_every_field_nested_ones_included() -> None:
    # The wire format the protocol document gives: every field by name, nested objects as maps.
    msg = wire.Generate(3, (ChatMessage("user", "hi"),), SamplingParams(max_tokens=5, stop=("\n",)), "s")
    assert msgpack.unpackb(wire.encode(msg)) == {
        "t": "gen",
        "sid": 3,
        "messages": [{"role": "user", "content": "hi"}],
        "params": {
            "max_tokens": 5,
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 0,
            "seed": None,
            "stop": ["\n"],
            "ignore_eos": False,
        },
        "session_id": "s",
        "request_id": "",
        "continue_text": "",
    }
    done = wire.Done(3, "stop", 10, 4, 2)
    assert msgpack.unpackb(wire.encode(done)) == {
        "t": "done",
        "sid": 3,
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "cached_tokens": 2,
    }


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # never valid msgpack
        msgpack.packb([1, 2]),
        msgpack.packb({"t": "nope"}),
        msgpack.packb({"sid": 1}),
        msgpack.packb({"t": "cancel"}),
        msgpack.packb({"t": "cancel", "sid": "x"}),
        msgpack.packb({"t": "gen", "sid": 1, "messages": [{"role": "robot", "content": "x"}], "params": {}}),
        msgpack.packb({"t": "gen", "sid": 1, "messages": [], "params": {"temperature": -1}}),
        msgpack.packb({"t": "delta", "sid": 1, "text": "x", "bogus": 1}),
        msgpack.packb({"t": "delta", "sid": "1", "text": "x", "tokens": 1}),
        msgpack.packb({"t": "delta", "sid": 1, "text": b"x", "tokens": 1}),
        msgpack.packb({"t": "delta", "sid": 1, "text": "x", "tokens": True}),
        msgpack.packb({"t": "delta", "sid": 1, "text": "x", "tokens": 1.0}),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode(frame)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "9"}, "max_tokens"),
        ({"temperature": 9}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -3}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"colour": 1}, "colour"),
    ],
)
def test_invalid_sampling_params_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams.from_dict(raw)
