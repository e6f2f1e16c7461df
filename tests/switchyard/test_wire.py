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
