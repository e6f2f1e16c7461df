"""The generation engine shared by edge and cloud nodes.

A single worker thread owns the model runtime and runs an iteration-level schedule: each turn of
its loop admits waiting requests (up to ``max_running``), prefills at most one newcomer, then
advances every running sequence by one token in one ``decode`` call. A sequence leaves the batch
the moment it finishes or is cancelled. The asyncio side only enqueues requests and relays events,
so a slow generation never blocks the event loop or other streams.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from switchyard.lm import KVCache, LanguageModel, Logits
from switchyard.sampling import Sampler
from switchyard.textstream import IncrementalDecoder, StopMatcher
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    code: str
    message: str


Event = TextChunk | Finished | Failed


class QueueFull(Exception):
    """The engine's wait queue is at its limit; the caller should try another node."""


@dataclass(eq=False)
class _Sequence:
    messages: tuple[ChatMessage, ...]
    params: SamplingParams
    emit: Callable[[Event], None]
    session_id: str = ""
    continue_text: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    cache: KVCache | None = None
    last_token: int = -1
    generated: int = 0
    pending_tokens: int = 0
    max_new: int = 0
    cancelled: bool = False
    sampler: Sampler | None = None
    decoder: IncrementalDecoder | None = None
    stopper: StopMatcher | None = None


class GenerationEngine:
    """Serves one language model to many concurrent streams."""

    def __init__(
        self,
        lm: LanguageModel,
        tokenizer: ChatTokenizer,
        *,
        max_running: int = 16,
        max_queued: int = 256,
    ) -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_running = max_running
        self.max_queued = max_queued
        self._lock = threading.Condition()
        self._inbox: collections.deque[_Sequence] = collections.deque()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        banned = tokenizer.banned_ids
        self._banned = np.asarray(banned, dtype=np.int64) if banned else None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="switchyard-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def context_window(self) -> int:
        return self.lm.context_window

    def load(self) -> tuple[int, int]:
        """(running, queued) right now."""
        with self._lock:
            return len(self._running), len(self._waiting) + len(self._inbox)

    def warm_up(self) -> None:
        """Run one tiny generation synchronously so the first real request is not the slow one."""
        logits, cache = self.lm.prefill(self.tokenizer.encode("Hello"))
        self.lm.decode([int(logits.argmax())], [cache])

    # --- asyncio side --------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        session_id: str = "",
        continue_text: str = "",
    ) -> AsyncIterator[Event]:
        """Stream events for one request; closing the iterator early cancels the generation.

        ``continue_text`` is a partial assistant reply (from a node that failed mid-reply) that the
        generation continues rather than starts over.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def emit(ev: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        seq = _Sequence(
            messages=tuple(messages),
            params=params,
            emit=emit,
            session_id=session_id,
            continue_text=continue_text,
        )
        with self._lock:
            if self._closed:
                raise QueueFull("engine is shutting down")
            if len(self._waiting) + len(self._inbox) >= self.max_queued:
                raise QueueFull(f"queue full ({self.max_queued} waiting)")
            self._inbox.append(seq)
            self._lock.notify()
        finished = False
        try:
            while True:
                ev = await queue.get()
                yield ev
                if not isinstance(ev, TextChunk):
                    finished = True
                    return
        finally:
            if not finished:
                seq.cancelled = True  # the worker drops it before its next step
                with self._lock:
                    self._lock.notify()

    # --- worker thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._closed or self._inbox or self._waiting or self._running):
                    self._lock.wait()
                if self._closed:
                    break
                self._waiting.extend(self._inbox)
                self._inbox.clear()
            self._drop_cancelled()
            self._admit_one()
            self._step()
        for seq in [*self._running, *self._waiting, *self._inbox]:
            seq.emit(Failed("shutting_down", "the node is shutting down"))

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._running if s.cancelled]:
            self._running.remove(seq)
        with self._lock:
            if any(s.cancelled for s in self._waiting):
                self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    def _admit_one(self) -> None:
        """Prefill one waiting request, so newcomers interleave with running decodes."""
        with self._lock:
            if not self._waiting or len(self._running) >= self.max_running:
                return
            seq = self._waiting.popleft()
        try:
            self._prepare(seq)
            logits, seq.cache = self.lm.prefill(seq.prompt_ids)
        except Exception as exc:
            log.exception("prefill failed")
            seq.emit(Failed("inference_error", f"prefill failed: {type(exc).__name__}"))
            return
        self._running.append(seq)
        assert seq.sampler is not None
        self._accept(seq, seq.sampler.pick(self._mask(logits)))

    def _mask(self, logits: Logits) -> Logits:
        if self._banned is not None:
            logits[..., self._banned] = -np.inf
        return logits

    def _prepare(self, seq: _Sequence) -> None:
        ctx = self.lm.context_window
        messages = list(seq.messages)
        ids = self.tokenizer.encode_chat(messages)
        # Leave room for at least a short reply: drop the oldest non-system turns first.
        budget = max(ctx - min(seq.params.max_tokens, ctx // 4), 1)
        while len(ids) > budget and _droppable(messages):
            del messages[_droppable(messages)[0]]
            ids = self.tokenizer.encode_chat(messages)
        if seq.continue_text:
            ids = ids + self.tokenizer.encode(seq.continue_text)
        if len(ids) > budget:
            ids = ids[-budget:]
        seq.prompt_ids = ids
        seq.max_new = max(1, min(seq.params.max_tokens, ctx - len(ids)))
        seq.sampler = Sampler(seq.params)
        seq.decoder = IncrementalDecoder(self.tokenizer.decode)
        seq.stopper = StopMatcher(seq.params.stop)

    def _step(self) -> None:
        batch = [s for s in self._running if not s.cancelled]
        if not batch:
            return
        try:
            logits, caches = self.lm.decode([s.last_token for s in batch], [s.cache for s in batch])  # type: ignore[misc]
        except Exception as exc:
            log.exception("decode step failed; failing the %d streams in it", len(batch))
            for seq in batch:
                self._running.remove(seq)
                seq.emit(Failed("inference_error", f"decode step failed: {type(exc).__name__}"))
            return
        logits = self._mask(logits)
        for i, seq in enumerate(batch):
            seq.cache = caches[i]
            assert seq.sampler is not None
            self._accept(seq, seq.sampler.pick(logits[i]))

    def _accept(self, seq: _Sequence, token: int) -> None:
        assert seq.decoder is not None and seq.stopper is not None
        if token == self.tokenizer.eos_id and not seq.params.ignore_eos:
            self._finish(seq, "stop")
            return
        seq.generated += 1
        seq.pending_tokens += 1
        seq.last_token = token
        text, stopped = seq.stopper.feed(seq.decoder.push(token))
        if text:
            seq.emit(TextChunk(text, seq.pending_tokens))
            seq.pending_tokens = 0
        if stopped:
            self._finish(seq, "stop", flush=False)
        elif seq.generated >= seq.max_new:
            self._finish(seq, "length")

    def _finish(self, seq: _Sequence, reason: str, *, flush: bool = True) -> None:
        assert seq.stopper is not None and seq.decoder is not None
        tail = ""
        if flush:
            tail, stopped = seq.stopper.feed(seq.decoder.flush())
            tail += "" if stopped else seq.stopper.flush()
        if tail:
            seq.emit(TextChunk(tail, seq.pending_tokens))
        self._running.remove(seq)
        seq.emit(Finished(reason, len(seq.prompt_ids), seq.generated))


def _droppable(messages: list[ChatMessage]) -> list[int]:
    """Indexes of turns that may be dropped to fit the window: all but system and the last."""
    return [i for i, m in enumerate(messages[:-1]) if m.role != "system"]
