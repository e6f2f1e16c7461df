"""What one loop turn writes to a corked socket arrives together, when the turn ends."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from router.upstream.turn_cork import TurnCork

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux-only")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.StreamWriter, socket.socket]]:
    """A loopback TCP connection: the asyncio writer, and the peer's plain non-blocking socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    _, writer = await asyncio.open_connection(*listener.getsockname())
    peer, _ = listener.accept()
    peer.setblocking(False)
    listener.close()
    yield writer, peer
    writer.close()
    peer.close()


def _stay_in_this_turn(seconds: float) -> None:
    """Let time pass without giving the event loop a turn (no await): on purpose, blocking."""
    time.sleep(seconds)


def _readable(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def _arrived(peer: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(200):
        got += _readable(peer)
        if len(got) >= size:
            break
        await asyncio.sleep(0.005)
    return got


async def test_writes_of_one_turn_leave_together_when_it_ends(
    pair: tuple[asyncio.StreamWriter, socket.socket],
) -> None:
    writer, peer = pair
    cork = TurnCork(writer.get_extra_info("socket"))
    cork.hold()
    for part in (b"one ", b"two ", b"three"):
        cork.hold()  # every write of the turn asks; the first one corks
        writer.write(part)
    _stay_in_this_turn(0.02)  # the kernel holds the bytes until the turn ends
    assert _readable(peer) == b""
    await asyncio.sleep(0)  # this turn ends; the release runs in the next
    assert await _arrived(peer, 13) == b"one two three"


async def test_a_later_turn_is_corked_afresh(pair: tuple[asyncio.StreamWriter, socket.socket]) -> None:
    writer, peer = pair
    cork = TurnCork(writer.get_extra_info("socket"))
    for turn in (b"first", b"second"):
        cork.hold()
        writer.write(turn)
        _stay_in_this_turn(0.005)
        assert _readable(peer) == b""
        assert await _arrived(peer, len(turn)) == turn


async def test_without_cork_writes_leave_at_once(pair: tuple[asyncio.StreamWriter, socket.socket]) -> None:
    """The control for the tests above: on loopback an uncorked write is readable straight away."""
    writer, peer = pair
    writer.write(b"now")
    _stay_in_this_turn(0.02)
    assert _readable(peer) == b"now"


async def test_a_socket_that_cannot_cork_is_written_as_it_comes() -> None:
    left, right = socket.socketpair()  # AF_UNIX: no TCP options
    with left, right:
        cork = TurnCork(left)
        cork.hold()
        assert not cork.active
        left.send(b"x")
        assert right.recv(1) == b"x"
