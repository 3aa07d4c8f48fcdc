"""Per-socket state held by one edge node (in memory: a socket lives on one node)."""
from __future__ import annotations

from dataclasses import dataclass, field

from realtime.ratelimit import Bucket


@dataclass
class SocketSession:
    sid: str
    connected_at: float
    user_id: str | None = None
    session_id: str | None = None     # the token's `sid` claim (auth session)
    device_id: str | None = None
    expires_at: float | None = None
    buckets: dict[str, Bucket] = field(default_factory=dict)
    rate_limited_at: list[float] = field(default_factory=list)
    conversations: set[str] = field(default_factory=set)   # joined rooms
    dropping: bool = False            # being disconnected for abuse

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None


class SessionRegistry:
    """sid -> SocketSession, plus the index auth-session id -> sids for revocation."""

    def __init__(self) -> None:
        self._by_sid: dict[str, SocketSession] = {}
        self._by_auth_session: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_sid)

    def add(self, session: SocketSession) -> None:
        self._by_sid[session.sid] = session

    def get(self, sid: str) -> SocketSession | None:
        return self._by_sid.get(sid)

    def all(self) -> list[SocketSession]:
        return list(self._by_sid.values())

    def bind_auth_session(self, session: SocketSession, auth_session_id: str | None) -> None:
        if session.session_id == auth_session_id:
            return
        self._unbind(session)
        session.session_id = auth_session_id
        if auth_session_id:
            self._by_auth_session.setdefault(auth_session_id, set()).add(session.sid)

    def sids_of_auth_session(self, auth_session_id: str) -> list[str]:
        return list(self._by_auth_session.get(auth_session_id, ()))

    def remove(self, sid: str) -> SocketSession | None:
        session = self._by_sid.pop(sid, None)
        if session is not None:
            self._unbind(session)
        return session

    def _unbind(self, session: SocketSession) -> None:
        if session.session_id:
            sids = self._by_auth_session.get(session.session_id)
            if sids is not None:
                sids.discard(session.sid)
                if not sids:
                    del self._by_auth_session[session.session_id]
