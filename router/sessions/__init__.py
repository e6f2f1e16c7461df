"""Multi-turn conversation state: one interface, an in-memory and a Redis implementation."""

from router.sessions.base import Session, SessionStore, new_session_id

__all__ = ["Session", "SessionStore", "new_session_id"]
