"""What the router needs from an upstream: a native node connection or an OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from router.config import NodeEndpoint
from switchyard import wire

StreamEvent = wire.Delta | wire.Done | wire.Error


class UpstreamUnavailable(Exception):
    """The upstream cannot take a stream now (not connected, connection dropped, refused)."""


class Upstream(Protocol):
    endpoint: NodeEndpoint
    load: wire.Load
    last_error: str

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def outstanding(self) -> int: ...

    @property
    def context_window(self) -> int: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def wait_connected(self, within_s: float) -> bool: ...

    def stream(
        self,
        messages: Sequence[wire.ChatMessage],
        params: wire.SamplingParams,
        *,
        session_id: str = "",
        request_id: str = "",
        continue_text: str = "",
    ) -> AsyncIterator[StreamEvent]:
        """Yield Delta* then Done or Error. Closing it early cancels the generation upstream.

        Raises ``UpstreamUnavailable`` at the first iteration if the stream cannot be opened.
        """
        ...
