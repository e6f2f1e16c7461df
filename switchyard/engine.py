"""The generation engine shared by edge and cloud nodes.

A single worker thread owns the model runtime and runs an iteration-level schedule. Each turn of
its loop:

1. admits waiting requests in arrival order while fewer than ``max_running`` are active and their
   worst-case KV (prompt + ``max_tokens``) fits ``max_kv_bytes``; the rest queue, and the queue
   depth is the load the node reports;
2. prefills newcomers within a budget of ``prefill_chunk`` prompt tokens: several short prompts in
   one model call when the runtime can (``BatchPrefill``), a long one in chunks over several turns,
   so a long prompt never stalls the running streams for more than one chunk;
3. advances every running sequence by one token in one ``decode`` call;
4. hands the events to the asyncio side, at most every ``stream_interval_s`` for running text
   (first tokens and endings at once), so a stream's tokens between two hand-overs go as one chunk.

A sequence leaves the batch the moment it finishes or is cancelled. When a request names a session,
the keys and values of its turn are kept afterwards (``SessionKVStore``, LRU within
``session_kv_bytes``) and the session's next turn reuses the longest shared prefix.

The asyncio side only enqueues requests and relays events, so a slow generation never blocks the
event loop or other streams.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from switchyard.lm import BatchPrefill, CacheOps, KVBudget, KVCache, LanguageModel, Logits
from switchyard.sampling import Sampler
from switchyard.session_kv import SessionKVStore
from switchyard.textstream import ByteTableDecoder, IncrementalDecoder, StopMatcher
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
    cached_tokens: int = 0  # prompt tokens whose keys and values came from the session's last turn


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
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]
    session_id: str = ""
    continue_text: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    generated_ids: list[int] = field(default_factory=list)
    cache: KVCache | None = None
    prefilled: int = 0  # prompt tokens in ``cache``
    cached_tokens: int = 0
    reserved_bytes: int = 0
    sent_text: bool = False
    pending_text: str = ""  # generated text not yet handed to the event loop
    last_token: int = -1
    generated: int = 0
    pending_tokens: int = 0  # tokens behind ``pending_text`` (and any that decoded to no text yet)
    max_new: int = 0
    cancelled: bool = False
    sampler: Sampler | None = None
    decoder: IncrementalDecoder | ByteTableDecoder | None = None
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
        max_kv_bytes: int | None = None,
        session_kv_bytes: int = 64 * 1024 * 1024,
        prefill_chunk: int = 256,
        stream_interval_s: float = 0.002,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1, got {prefill_chunk}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_kv_bytes = max_kv_bytes
        self.prefill_chunk = prefill_chunk
        self.stream_interval_s = stream_interval_s
        self._ops = lm if isinstance(lm, CacheOps) else None
        self._batch_prefill = lm if isinstance(lm, BatchPrefill) else None
        self._kv_per_token = self._ops.kv_bytes_per_token if self._ops else _estimated_kv_per_token(lm)
        # A runtime with a fixed KV pool knows what a sequence really takes (whole blocks) and how
        # much there is: admission then queues requests instead of letting a step run out of blocks.
        self._pool = lm if isinstance(lm, KVBudget) else None
        if self._pool is not None:
            cap = self._pool.kv_capacity_bytes
            self.max_kv_bytes = cap if max_kv_bytes is None else min(max_kv_bytes, cap)
        self._lock = threading.Condition()
        self._inbox: collections.deque[_Sequence] = collections.deque()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._prefilling: list[_Sequence] = []
        self._running: list[_Sequence] = []
        self._sampling = 0  # running sequences that sample (temperature > 0); the rest are greedy
        self._reserved_bytes = 0
        self._sessions = SessionKVStore(session_kv_bytes)
        self._session_ids: tuple[str, ...] = ()  # a snapshot for other threads; only the worker writes
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        self._texting: list[_Sequence] = []  # sequences with pending text, handed over at the next flush
        self._urgent = False
        self._last_flush = 0.0
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
        """(active, queued) right now: active sequences are prefilling or decoding."""
        with self._lock:
            return len(self._running) + len(self._prefilling), len(self._waiting) + len(self._inbox)

    def sessions(self) -> tuple[str, ...]:
        """Sessions whose last turn's keys and values this engine holds, most recent first."""
        return self._session_ids

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
        generation continues rather than starts over. Text that piles up while the consumer is busy
        comes as one larger chunk, so a slow consumer costs one message per wake-up, not per token.
        """
        queue: asyncio.Queue[Event] = asyncio.Queue()
        seq = _Sequence(
            messages=tuple(messages),
            params=params,
            loop=asyncio.get_running_loop(),
            queue=queue,
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
        held: Event | None = None
        try:
            while True:
                ev = held if held is not None else await queue.get()
                held = None
                if isinstance(ev, TextChunk):
                    while not queue.empty():
                        nxt = queue.get_nowait()
                        if not isinstance(nxt, TextChunk):
                            held = nxt
                            break
                        ev = TextChunk(ev.text + nxt.text, ev.tokens + nxt.tokens)
                    yield ev
                    continue
                finished = True
                yield ev
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
                while not (self._closed or self._inbox or self._waiting or self._prefilling or self._running):
                    self._flush(force=True)
                    self._lock.wait()
                if self._closed:
                    break
                self._waiting.extend(self._inbox)
                self._inbox.clear()
            self._drop_cancelled()
            self._admit()
            self._prefill()
            self._step()
            self._flush()
        for seq in [*self._running, *self._prefilling, *self._waiting, *self._inbox]:
            self._hand_over(seq, Failed("shutting_down", "the node is shutting down"))
        self._flush(force=True)

    def _queue_text(self, seq: _Sequence, text: str) -> None:
        """Add ``text`` to what ``seq`` hands over next; a stream's first text goes out at once."""
        if not seq.pending_text:
            self._texting.append(seq)
            if not seq.sent_text:
                self._urgent = True
        seq.pending_text += text

    def _hand_over(self, seq: _Sequence, ending: Finished | Failed | None = None) -> None:
        """Queue ``seq``'s pending text as one chunk, then ``ending``, for its event loop.

        Text builds up per sequence between flushes rather than as an event per token: at a flush a
        stream costs one chunk however many steps ran since the last one.
        """
        if not seq.pending_text and ending is None:
            return
        out = self._outbox.setdefault(seq.loop, [])
        if seq.pending_text:
            out.append((seq.queue, TextChunk(seq.pending_text, seq.pending_tokens)))
            seq.pending_text = ""
            seq.pending_tokens = 0
            seq.sent_text = True
        if ending is not None:
            out.append((seq.queue, ending))
            self._urgent = True  # endings go out at the end of this iteration

    def _flush(self, *, force: bool = False) -> None:
        """Hand pending events to their event loops: one wake-up per loop, not per token.

        Waking a loop writes to its self-pipe, and each event becomes a frame on the wire; per token
        that costs more than the model step of a small model. So text is handed over at most every
        ``stream_interval_s`` (a stream's tokens in between travel as one chunk), while first tokens
        and endings go at once.
        """
        if not (self._outbox or self._texting):
            return
        now = time.monotonic()
        if not (force or self._urgent or now - self._last_flush >= self.stream_interval_s):
            return
        for seq in self._texting:
            self._hand_over(seq)
        self._texting.clear()
        for loop, items in self._outbox.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(_deliver, items)
        self._outbox = {}
        self._urgent = False
        self._last_flush = now

    def _drop_cancelled(self) -> None:
        for active in (self._running, self._prefilling):
            for seq in [s for s in active if s.cancelled]:
                self._leave(seq)
        with self._lock:
            if any(s.cancelled for s in self._waiting):
                self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    def _admit(self) -> None:
        """Move waiting requests, in order, into prefill while sequences and KV memory allow."""
        while True:
            with self._lock:
                active = len(self._running) + len(self._prefilling)
                if not self._waiting or active >= self.max_running:
                    return
                seq = self._waiting[0]
            if not seq.prompt_ids:
                try:
                    self._prepare(seq)
                except Exception as exc:
                    log.exception("could not prepare a request")
                    self._pop_waiting(seq)
                    reason = f"could not encode the chat: {type(exc).__name__}"
                    self._hand_over(seq, Failed("bad_request", reason))
                    continue
            if self._pool is not None:
                need = self._pool.kv_reservation_bytes(len(seq.prompt_ids), seq.max_new)
            else:
                need = (len(seq.prompt_ids) + seq.max_new) * self._kv_per_token
            over = self.max_kv_bytes is not None and self._reserved_bytes + need > self.max_kv_bytes
            if over and active > 0:  # wait for memory; alone, a request runs whatever it needs
                return
            self._pop_waiting(seq)
            seq.reserved_bytes = need
            self._reserved_bytes += need
            self._reuse_prefix(seq)
            self._prefilling.append(seq)

    def _pop_waiting(self, seq: _Sequence) -> None:
        with self._lock:
            self._waiting.remove(seq)

    def _reuse_prefix(self, seq: _Sequence) -> None:
        if not seq.session_id:
            return
        hit = self._sessions.lookup(seq.session_id, seq.prompt_ids)
        if hit is None:
            return
        if self._ops is not None:
            cache: KVCache | None = self._ops.trim(hit.cache, hit.length)
        else:  # without trim, only a stored cache that is wholly a prefix can be used as it is
            cache = hit.cache if hit.cache.length == hit.length else None
        if cache is not None:
            seq.cache = cache
            seq.prefilled = seq.cached_tokens = hit.length

    def _prefill(self) -> None:
        """Prefill newcomers within ``prefill_chunk`` tokens: whole short prompts, or one long chunk.

        A batch of prompts is padded to its longest, so the budget counts rows x longest: the work
        the model does, not just the real tokens.
        """
        group: list[_Sequence] = []
        longest = 0
        for seq in self._prefilling:
            remaining = len(seq.prompt_ids) - seq.prefilled
            if (len(group) + 1) * max(longest, remaining) <= self.prefill_chunk:
                group.append(seq)
                longest = max(longest, remaining)
                continue
            if not group:
                self._prefill_chunk(seq, self.prefill_chunk)
            break
        if len(group) > 1 and self._batch_prefill is not None:
            self._prefill_together(self._batch_prefill, group)
        else:
            for seq in group:
                self._prefill_together(None, [seq])

    def _prefill_chunk(self, seq: _Sequence, size: int) -> None:
        chunk = seq.prompt_ids[seq.prefilled : seq.prefilled + size]
        try:
            _, seq.cache = self.lm.prefill(chunk, seq.cache)
        except Exception as exc:
            log.exception("prefill failed")
            self._fail([seq], "prefill", exc)
            return
        seq.prefilled += len(chunk)

    def _prefill_together(self, runtime: BatchPrefill | None, group: list[_Sequence]) -> None:
        rows = [seq.prompt_ids[seq.prefilled :] for seq in group]
        try:
            if runtime is None:
                (seq,) = group
                last, cache = self.lm.prefill(rows[0], seq.cache)
                logits, caches = last[None], [cache]
            else:
                logits, caches = runtime.prefill_batch(rows, [seq.cache for seq in group])
        except Exception as exc:
            log.exception("prefill failed; failing the %d streams in it", len(group))
            self._fail(group, "prefill", exc)
            return
        logits = self._mask(logits)
        for i, seq in enumerate(group):
            seq.cache = caches[i]
            seq.prefilled = len(seq.prompt_ids)
            self._prefilling.remove(seq)
            self._running.append(seq)
            if seq.params.temperature > 0.0:
                self._sampling += 1
            assert seq.sampler is not None
            self._accept(seq, seq.sampler.pick(logits[i]))

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
        table = self.tokenizer.byte_table
        seq.decoder = (
            ByteTableDecoder(table) if table is not None else IncrementalDecoder(self.tokenizer.decode)
        )
        seq.stopper = StopMatcher(seq.params.stop)

    def _step(self) -> None:
        batch = [s for s in self._running if not s.cancelled]
        if not batch:
            return
        try:
            logits, caches = self.lm.decode([s.last_token for s in batch], [s.cache for s in batch])  # type: ignore[misc]
        except Exception as exc:
            log.exception("decode step failed; failing the %d streams in it", len(batch))
            self._fail(batch, "decode step", exc)
            return
        logits = self._mask(logits)
        if not self._sampling:
            # All greedy (the common case for chat APIs at temperature 0): one argmax for the batch.
            for seq, cache, token in zip(batch, caches, logits.argmax(axis=-1).tolist(), strict=True):
                seq.cache = cache
                self._accept(seq, token)
            return
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
        seq.generated_ids.append(token)
        seq.pending_tokens += 1
        seq.last_token = token
        text, stopped = seq.stopper.feed(seq.decoder.push(token))
        if text:
            self._queue_text(seq, text)
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
            self._queue_text(seq, tail)
        self._keep_session(seq)
        self._leave(seq)
        self._hand_over(seq, Finished(reason, len(seq.prompt_ids), seq.generated, seq.cached_tokens))

    def _keep_session(self, seq: _Sequence) -> None:
        """Keep the finished turn's keys and values for the session's next turn."""
        if not seq.session_id or seq.cache is None:
            return
        try:
            cache = self._ops.detach(seq.cache) if self._ops is not None else seq.cache
        except Exception:  # losing a reuse opportunity must not fail a finished stream
            log.exception("could not keep the session's cache")
            return
        tokens = [*seq.prompt_ids, *seq.generated_ids][: cache.length]
        self._sessions.put(seq.session_id, tokens, cache, cache.length * self._kv_per_token)
        self._session_ids = self._sessions.session_ids()

    def _fail(self, seqs: list[_Sequence], call: str, exc: Exception) -> None:
        """End the streams of a model call that raised, with a typed error; the node keeps serving."""
        for seq in seqs:
            self._leave(seq)
            self._hand_over(seq, Failed("inference_error", f"{call} failed: {type(exc).__name__}"))

    def _leave(self, seq: _Sequence) -> None:
        """Take ``seq`` out of the active lists and give back its KV reservation."""
        if seq in self._running:
            self._running.remove(seq)
            if seq.params.temperature > 0.0:
                self._sampling -= 1
        elif seq in self._prefilling:
            self._prefilling.remove(seq)
        self._reserved_bytes -= seq.reserved_bytes
        seq.reserved_bytes = 0
        seq.cache = None


def _deliver(items: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for queue, ev in items:
        queue.put_nowait(ev)


def _estimated_kv_per_token(lm: LanguageModel) -> int:
    """Keys and values of one token over all layers, assuming 4-byte elements (an upper bound)."""
    cfg = lm.config
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4


def _droppable(messages: list[ChatMessage]) -> list[int]:
    """Indexes of turns that may be dropped to fit the window: all but system and the last."""
    return [i for i, m in enumerate(messages[:-1]) if m.role != "system"]
