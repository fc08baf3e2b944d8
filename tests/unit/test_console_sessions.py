"""Console sessions: random tokens, idle expiry on an injected clock, CSRF comparison."""

from __future__ import annotations

from node.console.sessions import IDLE_SECONDS, MAX_SESSIONS, SessionStore, csrf_ok


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_console_sessions_expire_after_idle_time_and_stay_alive_while_used():
    clock = _Clock()
    store = SessionStore(clock)
    token, session = store.create("auditor")
    clock.now += IDLE_SECONDS - 1
    assert store.get(token) is session  # use renews it
    clock.now += IDLE_SECONDS - 1
    assert store.get(token) is session
    clock.now += IDLE_SECONDS + 1
    assert store.get(token) is None


def test_console_sessions_unknown_dropped_and_oversized_tokens_find_nothing():
    store = SessionStore(_Clock())
    token, _ = store.create("auditor")
    assert store.get(None) is None and store.get("") is None
    assert store.get("x" * 1000) is None and store.get(token + "x") is None
    store.drop(token)
    assert store.get(token) is None


def test_console_sessions_are_bounded_dropping_the_least_recently_used():
    clock = _Clock()
    store = SessionStore(clock)
    first, _ = store.create("a")
    tokens = []
    for _ in range(MAX_SESSIONS - 1):
        clock.now += 0.001
        tokens.append(store.create("b")[0])
    clock.now += 0.001
    assert store.get(first) is not None  # renewed: now the most recently used
    store.create("c")
    assert store.get(first) is not None and store.get(tokens[0]) is None


def test_console_sessions_csrf_token_must_match_exactly():
    _, session = SessionStore(_Clock()).create("auditor")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf[:-1]) and not csrf_ok(session, session.csrf + "a")
    _, other = SessionStore(_Clock()).create("auditor")
    assert not csrf_ok(session, other.csrf)
