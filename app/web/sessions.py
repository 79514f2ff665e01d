"""Page sessions: an API token exchanged at /login for a cookie, checked against the token on
every request, so revoking the token ends its sessions at once.

The cookie holds 256 random bits; Redis keeps only its SHA-256 (with the token's digest and
the session's expiry), like the tokens themselves. One script reads the session and the token
in one round trip.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import cast

from app import keys
from app.store import Store, aw, translated
from app.tokens import Token, Tokens, digest, from_hash

COOKIE = "rf_session"
SESSION_TTL_S = 12 * 3600

_RESOLVE = """
local token_digest = redis.call('HGET', KEYS[1], 'token')
if not token_digest then return false end
local token = redis.call('HGETALL', ARGV[1] .. token_digest)
table.insert(token, 'session_token')
table.insert(token, token_digest)
return token
"""


def _key(sid: str) -> str:
    return keys.session(hashlib.sha256(sid.encode()).hexdigest())


class Sessions:
    def __init__(self, store: Store, tokens: Tokens) -> None:
        self.redis = store.redis
        self.tokens = tokens

    async def create(self, token: str) -> str:
        """A new session for a token already verified; returns the cookie value."""
        sid = secrets.token_urlsafe(32)
        async with translated("start a session"), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(sid), mapping={"token": digest(token), "created_at": repr(time.time())})
            pipe.expire(_key(sid), SESSION_TTL_S)
            await pipe.execute()
        return sid

    async def resolve(self, sid: str) -> Token | None:
        """The live token behind a session cookie, or None (unknown, expired, or token revoked)."""
        if not sid or len(sid) > 100:
            return None
        async with translated("check a session"):
            found = await aw(self.redis.eval(_RESOLVE, 1, _key(sid), keys.token("")))
        if not found:
            return None
        fields = cast(list[str], found)
        h = dict(zip(fields[::2], fields[1::2], strict=True))
        d = h.pop("session_token")
        return self.tokens.env_token(d) or from_hash(h, d)

    async def end(self, sid: str) -> None:
        async with translated("end a session"):
            await aw(self.redis.delete(_key(sid)))
