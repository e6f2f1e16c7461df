"""One chat turn, end to end: session, features, policy decision, node choice, relay, persistence.

Both client APIs (WebSocket and OpenAI-compatible HTTP) call ``ChatService.run`` and only encode
what it yields. Errors that stop a request before any text are raised as ``SwitchyardError``; the
first event of a served request is always ``RouteChosen``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from router.admission import Gate
from router.cache import CachedReply, PromptCache, cache_key, cacheable, storable
from router.calibration import ShareCalibrator
from router.chat_types import ChatEvent, ChatRequest, Completed, Route, RouteChosen, TextOut
from router.deadline import StreamDeadline, next_before
from router.errors import NoBackendAvailable, UnknownSession, UpstreamFailed
from router.fleet import Fleet
from router.metrics import RouterMetrics
from router.policy import Decision, Features, Policy, decide
from router.sessions import SessionStore
from router.tokens import TokenCounter, conversation_tokens, trim_to_window
from router.upstream.base import StreamEvent, Upstream, UpstreamUnavailable
from switchyard import wire
from switchyard.wire import ChatMessage, SamplingParams

log = logging.getLogger(__name__)

__all__ = ["ChatEvent", "ChatRequest", "ChatService", "Completed", "Route", "RouteChosen", "TextOut"]


@dataclass(frozen=True, slots=True)
class _Plan:
    session_id: str | None
    session_node: str
    conversation: tuple[ChatMessage, ...]
    decision: Decision
    params: SamplingParams
    deadline: float  # perf_counter time
    cache_key: str | None


@dataclass(frozen=True, slots=True)
class _Timing:
    started: float
    first_token_at: float  # 0.0: no text was produced


class ChatService:
    def __init__(
        self,
        *,
        fleet: Fleet,
        sessions: SessionStore,
        policy: Callable[[], Policy],
        counter: TokenCounter,
        metrics: RouterMetrics,
        first_token_timeout_s: float = 30.0,
        request_timeout_s: float = 300.0,
        scorer: Callable[[str], float] | None = None,
        gate: Gate | None = None,
        cache: PromptCache | None = None,
        cache_ttl_s: float = 600.0,
        calibrator: ShareCalibrator | None = None,
    ) -> None:
        self.fleet = fleet
        self.sessions = sessions
        self._policy = policy
        self.counter = counter
        self.metrics = metrics
        self.first_token_timeout_s = first_token_timeout_s
        self.request_timeout_s = request_timeout_s
        self.scorer = scorer
        self.gate = gate
        self.cache = cache
        self.cache_ttl_s = cache_ttl_s
        self.calibrator = calibrator
        self._cloud_share = 0.0

    async def run(self, req: ChatRequest) -> AsyncIterator[ChatEvent]:
        started = time.perf_counter()
        if self.gate is not None:
            await self.gate.enter(req.tenant)
        try:
            plan = await self._plan(req, started)
            if plan.cache_key is not None:
                hit = await self._cache_get(plan.cache_key)
                if hit is not None:
                    async for replayed in self._replay(req, hit, plan.decision, plan.session_id, started):
                        yield replayed
                    return
            decision, params = plan.decision, plan.params
            node, stream, first, attempts = await self._first_event(
                req,
                decision,
                plan.conversation,
                params,
                plan.deadline,
                continue_text="",
                exclude=frozenset(),
                session_id=plan.session_id or "",
                preferred=plan.session_node,
            )
            route = Route(decision.target, node.id, decision.reason, decision.rule, attempts)
            if node.kind != decision.target:
                route = replace(
                    route, target=node.kind, reason=f"{decision.reason}; fell back to {node.kind}"
                )
                self.metrics.fallbacks.labels(decision.target, node.kind).inc()
            yield RouteChosen(route, plan.session_id)

            # The relay loop stays inline: a nested generator would cost a frame per token.
            parts: list[str] = []
            first_token_at = 0.0
            tokens = 0  # completion tokens relayed, from every node that served this reply
            failed_nodes: set[str] = set()
            ev: StreamEvent = first
            self.metrics.active_streams.inc()
            deadline = StreamDeadline(plan.deadline)
            try:
                while True:
                    if isinstance(ev, wire.Delta):
                        if not parts:
                            first_token_at = time.perf_counter()
                            self.metrics.ttft_by(route.target).observe(first_token_at - started)
                        parts.append(ev.text)
                        tokens += ev.tokens
                        yield TextOut(ev.text)
                    elif isinstance(ev, wire.Done) and ev.finish_reason != "cancelled":
                        break
                    else:
                        # The node failed mid-reply: continue the same reply elsewhere from the text so far.
                        why = ev.code if isinstance(ev, wire.Error) else "stream ended"
                        log.warning(
                            "request %s: node %s failed mid-reply (%s); failing over",
                            req.request_id,
                            node.id,
                            why,
                        )
                        await stream.aclose()  # type: ignore[attr-defined]
                        failed_nodes.add(node.id)
                        self.fleet.record(node.id, failed=True)
                        left = params.max_tokens - tokens
                        if left <= 0:
                            ev = wire.Done(-1, "length", 0, 0)
                            break
                        old = node
                        node, stream, ev, more = await self._first_event(
                            req,
                            decision,
                            plan.conversation,
                            replace(params, max_tokens=left),
                            plan.deadline,
                            continue_text="".join(parts),
                            exclude=frozenset(failed_nodes),
                            session_id=plan.session_id or "",
                            preferred="",
                        )
                        note = f"{old.id} -> {node.id} after {tokens} tokens ({why})"
                        route = replace(
                            route,
                            node=node.id,
                            target=node.kind,
                            failovers=(*route.failovers, note),
                            attempts=route.attempts + more,
                        )
                        self.metrics.fallbacks.labels(old.kind, node.kind).inc()
                        continue
                    try:
                        ev = await deadline.next(stream)
                    except StopAsyncIteration:
                        ev = wire.Error(-1, "stream_ended", "the node's stream ended without done")
                    except TimeoutError as exc:
                        raise UpstreamFailed(f"node {node.id}: request deadline passed mid-reply") from exc
            finally:
                deadline.close()
                self.metrics.active_streams.dec()
                await stream.aclose()  # type: ignore[attr-defined]
            self.fleet.record(node.id, failed=False)
            timing = _Timing(started, first_token_at)
            assert isinstance(ev, wire.Done)  # the relay leaves its loop only on Done
            yield await self._complete(req, plan, route, "".join(parts), ev, tokens, timing)
        finally:
            if self.gate is not None:
                self.gate.leave()

    async def _plan(self, req: ChatRequest, started: float) -> _Plan:
        """Everything decided before a node is asked: session, route decision, caps, deadline, cache key."""
        session_id, history, session_tier, session_node = await self._open_session(req)
        conversation = history + req.messages
        policy = self._policy()
        decision = decide(policy, self._features(req, conversation, session_tier, policy))
        self.metrics.decisions_by(decision.target, decision.rule).inc()
        params = req.params
        if decision.max_tokens is not None and params.max_tokens > decision.max_tokens:
            params = replace(params, max_tokens=decision.max_tokens)
        deadline = started + min(decision.deadline_s or self.request_timeout_s, self.request_timeout_s)
        key = None
        if self.cache is not None and policy.cache and cacheable(params, policy.cache_sampled):
            key = cache_key(req.tenant, decision.target, req.model, conversation, params)
        return _Plan(session_id, session_node, conversation, decision, params, deadline, key)

    async def _complete(
        self,
        req: ChatRequest,
        plan: _Plan,
        route: Route,
        text: str,
        done: wire.Done,
        tokens: int,
        t: _Timing,
    ) -> Completed:
        """Book a finished reply: metrics, session turns, cache, token budget, one log line."""
        finish = done.finish_reason
        node_prompt_tokens = done.prompt_tokens
        now = time.perf_counter()
        total_ms = (now - t.started) * 1000
        ttft_ms = (t.first_token_at - t.started) * 1000 if t.first_token_at else total_ms
        if t.first_token_at and tokens > 1:
            self.metrics.tpot_by(route.target).observe((now - t.first_token_at) / (tokens - 1))
        self.metrics.routed_by(route.target).inc()
        # An exponentially weighted share over roughly the last 200 requests.
        self._cloud_share += ((route.target == "cloud") - self._cloud_share) / 200
        self.metrics.cloud_share.set(self._cloud_share)
        self.metrics.completion_tokens_by(route.target).inc(tokens)
        if req.use_session and plan.session_id is not None:
            # Only a completed reply is stored, with the turn that asked for it.
            turns = (*req.messages, ChatMessage("assistant", text))
            await self.sessions.append(plan.session_id, turns, tier=route.target, node=route.node)
        if plan.cache_key is not None and storable(finish):
            await self._cache_put(plan.cache_key, text, finish, node_prompt_tokens, tokens, route)
        if self.gate is not None:
            await self.gate.charge(req.tenant, node_prompt_tokens + tokens)
        # After a failover the last node saw a longer prompt; report the conversation's own size.
        prompt_tokens = (
            node_prompt_tokens
            if not route.failovers
            else conversation_tokens(self.counter, plan.conversation)
        )
        # One structured line per chat: who, where, how fast. Never the prompt or reply text.
        log.info(
            "chat completed",
            extra={
                "request_id": req.request_id,
                "api": req.api,
                "tenant": req.tenant,
                "target": route.target,
                "node": route.node,
                "rule": route.rule,
                "failovers": len(route.failovers),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "ttft_ms": round(ttft_ms, 2),
                "total_ms": round(total_ms, 2),
                "finish_reason": finish,
            },
        )
        return Completed(route, plan.session_id, finish, prompt_tokens, tokens, ttft_ms, total_ms, text)

    async def _cache_get(self, key: str) -> CachedReply | None:
        assert self.cache is not None
        try:
            hit = await self.cache.get(key)
        except Exception as exc:  # a cache outage is a miss, not an error
            log.warning("prompt cache unavailable: %s", exc)
            self.metrics.cache_by("error").inc()
            return None
        self.metrics.cache_by("hit" if hit is not None else "miss").inc()
        return hit

    async def _cache_put(
        self, key: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int, route: Route
    ) -> None:
        assert self.cache is not None
        reply = CachedReply(
            text, finish, prompt_tokens, completion_tokens, route.target, route.node, time.time()
        )
        try:
            await self.cache.put(key, reply, self.cache_ttl_s)
        except Exception as exc:
            log.warning("prompt cache unavailable: %s", exc)

    async def _replay(
        self, req: ChatRequest, hit: CachedReply, decision: Decision, session_id: str | None, started: float
    ) -> AsyncIterator[ChatEvent]:
        """Serve a cached reply as if it had been generated: same events, no node involved."""
        route = Route(
            hit.tier, "cache", f"cache hit (first served by {hit.node}); {decision.reason}", "cache"
        )
        yield RouteChosen(route, session_id)
        ttft_ms = (time.perf_counter() - started) * 1000
        yield TextOut(hit.text)
        if req.use_session and session_id is not None:
            turns = (*req.messages, ChatMessage("assistant", hit.text))
            await self.sessions.append(session_id, turns, tier=hit.tier, node="")
        total_ms = (time.perf_counter() - started) * 1000
        yield Completed(
            route,
            session_id,
            hit.finish_reason,
            hit.prompt_tokens,
            hit.completion_tokens,
            ttft_ms,
            total_ms,
            hit.text,
        )

    async def _open_session(self, req: ChatRequest) -> tuple[str | None, tuple[ChatMessage, ...], str, str]:
        if not req.use_session:
            return None, (), "", ""
        if req.session_id is None:
            return await self.sessions.create(), (), "", ""
        session = await self.sessions.get(req.session_id)
        if session is None:
            raise UnknownSession(f"unknown or expired session {req.session_id!r}", param="session_id")
        return session.session_id, session.messages, session.tier, session.node

    def _features(
        self, req: ChatRequest, conversation: tuple[ChatMessage, ...], session_tier: str, policy: Policy
    ) -> Features:
        last_user = next((m.content for m in reversed(conversation) if m.role == "user"), "")
        # The classifier costs tens of microseconds: run it only when a rule that ``decide`` will look
        # at reads the score. A conversation held on its tier is checked only against the rules that
        # may move it, which in the shipped policies never read the score. The calibrator therefore
        # sees the scores of the requests its threshold can route, and no others.
        score = 0.0
        threshold = 0.5
        if self.scorer is not None and policy.uses("score", sticky=policy.holds_sticky(session_tier)):
            score = self.scorer(last_user)
            if policy.calibration is not None and self.calibrator is not None:
                self.calibrator.record(score)
                cal = policy.calibration
                threshold = self.calibrator.threshold(cal.target_cloud_share, cal.fallback_threshold)
                self.metrics.score_threshold.set(threshold)
        conv_tokens = conversation_tokens(self.counter, conversation)
        edge_ctx = self.fleet.context_window("edge")
        reserve = min(req.params.max_tokens, edge_ctx // 4) if edge_ctx else 0
        edge_nodes = self.fleet.healthy("edge")
        return Features(
            prompt_tokens=self.counter.count(last_user),
            conversation_tokens=conv_tokens,
            turn=1 + sum(1 for m in conversation[:-1] if m.role == "user"),
            score=score,
            score_threshold=threshold,
            tenant=req.tenant,
            model=req.model,
            fits_edge_context=not edge_ctx or conv_tokens + reserve <= edge_ctx,
            edge_queue_depth=self.fleet.queue_depth("edge"),
            edge_load=min((n.outstanding / max(1, n.load.capacity) for n in edge_nodes), default=0.0),
            session_tier=session_tier,
        )

    async def _first_event(
        self,
        req: ChatRequest,
        decision: Decision,
        conversation: tuple[ChatMessage, ...],
        params: SamplingParams,
        deadline: float,
        *,
        continue_text: str,
        exclude: frozenset[str],
        session_id: str,
        preferred: str,
    ) -> tuple[Upstream, AsyncIterator[StreamEvent], StreamEvent, tuple[str, ...]]:
        """Open a stream on the first tier and node that produce a first event; record failures.

        With ``continue_text`` (a failover mid-reply), the node continues that partial reply;
        the tier the reply started on is tried first, then the policy's fallbacks.
        """
        attempts: list[str] = []
        for tier in (decision.target, *decision.fallbacks):
            tried: set[str] = set(exclude)
            while (
                node := self.fleet.pick(
                    tier, exclude=frozenset(tried), session_id=session_id, preferred=preferred
                )
            ) is not None:
                tried.add(node.id)
                ctx = node.context_window
                trimmed = trim_to_window(self.counter, conversation, ctx - min(params.max_tokens, ctx // 4))
                stream = node.stream(
                    trimmed,
                    params,
                    session_id=req.session_id or "",
                    request_id=req.request_id,
                    continue_text=continue_text,
                )
                budget = min(self.first_token_timeout_s, deadline - time.perf_counter())
                try:
                    first = await next_before(stream, time.perf_counter() + budget)
                except (UpstreamUnavailable, TimeoutError, StopAsyncIteration) as exc:
                    await stream.aclose()  # type: ignore[attr-defined]
                    attempts.append(f"{node.id}: {type(exc).__name__}")
                    self.fleet.record(node.id, failed=True)
                    continue
                except BaseException:
                    await stream.aclose()  # type: ignore[attr-defined]
                    raise
                if isinstance(first, wire.Error):
                    await stream.aclose()  # type: ignore[attr-defined]
                    attempts.append(f"{node.id}: {first.code}")
                    # Overload and drain are the node protecting itself, not failing.
                    if first.code not in ("overloaded", "draining"):
                        self.fleet.record(node.id, failed=True)
                    continue
                return node, stream, first, tuple(attempts)
            if tried == set(exclude):
                attempts.append(f"{tier}: no healthy node")
        raise NoBackendAvailable("no backend could take the request (" + "; ".join(attempts) + ")")
