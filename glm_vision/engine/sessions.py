"""Per-session engine state (the conversation's live KV cache and its image features), with an idle
timeout, a cap on the number of sessions and one KV byte budget over all of them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .cache import FeatureCache, TokenKey, reusable_prefix

# Shorter common openings ([gMASK]<sop>, a role tag) are not worth a copy; vLLM shares 16-token blocks.
MIN_SHARED_PREFIX = 16


@dataclass
class KVState:
    saved: object  # the conversation's KV (a SavedKV) for exactly len(keys) tokens
    keys: list[TokenKey]
    bytes_per_token: int

    @property
    def nbytes(self) -> int:
        return len(self.keys) * self.bytes_per_token


@dataclass
class Session:
    id: str
    scope: str | None = None  # sessions of one scope (one API key) may read each other's KV prefixes
    kv: KVState | None = None
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0

    @property
    def kv_bytes(self) -> int:
        return self.kv.nbytes if self.kv is not None else 0


class SessionStore:
    def __init__(self, features: FeatureCache, *, kv_budget_bytes: int, idle_s: float, max_sessions: int) -> None:
        self.features = features
        self.kv_budget_bytes = kv_budget_bytes
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.kv_evictions = 0

    def acquire(self, session_id: str, scope: str | None = None) -> Session:
        """The session (created if new), marked busy so that it is not freed while in use."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id, scope)
            session.busy += 1
            session.last_used = time.monotonic()
            self._evict_sessions_over_count(keep=session)
            return session

    def release(self, session: Session) -> None:
        with self._lock:
            session.busy -= 1
            session.last_used = time.monotonic()
            self._enforce_kv_budget(keep=session)

    def close(self, session_id: str) -> bool:
        """Free a session's KV and image features (a closed tab, a "new chat")."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        self.features.drop_scope(session_id)
        if session is None:
            return False
        session.kv = None
        return True

    def sweep_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s.id for s in self._sessions.values() if not s.busy and now - s.last_used > self.idle_s]
        for session_id in idle:
            self.close(session_id)
        return idle

    def shared_prefix(self, session: Session, keys: list[TokenKey]) -> tuple[KVState | None, int]:
        """The longest KV prefix of `keys` that another session of the same scope holds (vLLM's prefix
        cache, at the granularity of conversations): a new conversation of an API key that opens like
        an earlier one (same system prompt and image, another question) starts from that KV."""
        if session.scope is None:
            return None, 0
        with self._lock:
            others = [s.kv for s in self._sessions.values() if s is not session and s.scope == session.scope and s.kv]
        best: tuple[KVState | None, int] = (None, MIN_SHARED_PREFIX - 1)
        for kv in others:
            length = reusable_prefix(kv.keys, keys)
            if length > best[1]:
                best = (kv, length)
        return best if best[0] is not None else (None, 0)

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def kv_bytes(self) -> int:
        with self._lock:
            return sum(s.kv_bytes for s in self._sessions.values())

    def _evict_sessions_over_count(self, keep: Session) -> None:
        while len(self._sessions) > self.max_sessions:
            candidates = [s for s in self._sessions.values() if s is not keep and not s.busy]
            if not candidates:
                return
            victim = min(candidates, key=lambda s: s.last_used)
            del self._sessions[victim.id]
            victim.kv = None
            self.features.drop_scope(victim.id)

    def _enforce_kv_budget(self, keep: Session) -> None:
        total = sum(s.kv_bytes for s in self._sessions.values())
        if keep.kv_bytes > self.kv_budget_bytes:
            total -= keep.kv_bytes
            keep.kv = None  # alone larger than the budget: recomputed next turn
            self.kv_evictions += 1
        by_age = sorted(
            (s for s in self._sessions.values() if s is not keep and s.kv is not None), key=lambda s: s.last_used
        )
        for victim in by_age:
            if total <= self.kv_budget_bytes:
                break
            if victim.busy:
                continue
            total -= victim.kv_bytes
            victim.kv = None
            self.kv_evictions += 1
