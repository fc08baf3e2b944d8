"""Login sessions of the console: random tokens in a cookie, one CSRF token per session."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

COOKIE = "chainmill_console"
IDLE_SECONDS = 8 * 3600
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    """One logged-in user."""

    user: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = 0.0


SESSION_KEY = web.RequestKey("session", Session | None)  # type: ignore[arg-type]


class SessionStore:
    """Sessions kept in memory: a console restart logs everyone out, which is what we want."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, user: str) -> tuple[str, Session]:
        """A new session for ``user`` and its cookie token."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:  # drop the least recently used
            oldest = min(self._sessions, key=lambda t: self._sessions[t].last_seen)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        session = Session(user, last_seen=self._clock())
        self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie token, or None."""
        if not token or len(token) > 100:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > IDLE_SECONDS:
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if now - s.last_seen > IDLE_SECONDS]:
            del self._sessions[token]


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (constant-time)."""
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), str(presented).encode())
