"""API bearer tokens: random, shown once, stored only as SHA-256 digests, scoped admin or read.

Tokens carry 256 bits of randomness, so a fast digest is the right tool (a slow password hash
would only add latency to every request); the stored digest is compared in constant time.
`API_TOKENS` in the environment may also name admin tokens, for bootstrapping a deployment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from app import keys
from app.errors import ValidationError
from app.leases import OWNER_LOOKUP
from app.store import Store, aw, translated

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCOPES = ("admin", "read")
TOKEN_PREFIX = "rft_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    """A token's public description (never the token itself)."""

    name: str
    scope: str
    created_at: float
    study: str = ""  # "": deployment-wide; else the one study it sees (and, as admin, changes)

    @property
    def can_write(self) -> bool:
        return self.scope == "admin"

    @property
    def deployment_wide(self) -> bool:
        return not self.study

    def sees(self, study: str) -> bool:
        """Whether this token may see a device or study of `study` at all."""
        return not self.study or self.study == study

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at,
            "study": self.study or None,
        }


class Tokens:
    """Create, list, revoke and verify tokens in Redis, plus admin tokens from API_TOKENS."""

    def __init__(self, store: Store, env_tokens: str = "") -> None:
        self.redis = store.redis
        self._env = {digest(t.strip()): f"env-{i}" for i, t in enumerate(env_tokens.split(",")) if t.strip()}

    async def create(self, name: str, read_only: bool = False, study: str = "") -> str:
        """A new token for `name` (scoped to one study when `study` is given); the only time the
        token itself exists outside the caller."""
        if not NAME_RE.match(name):
            raise ValidationError(
                "a token name is 1-64 letters, digits, '.', '_' or '-', starting alphanumeric."
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        d = digest(token)
        record = {"name": name, "scope": "read" if read_only else "admin", "created_at": repr(time.time()),
                  "digest": d, "study": study}  # fmt: skip
        async with translated(f"create token {name}"):
            if not await aw(self.redis.hsetnx(keys.tokens(), name, d)):
                raise ValidationError(
                    f"a token named {name!r} exists already: revoke it first or pick another name."
                )
            await aw(self.redis.hset(keys.token(d), mapping=cast(dict[Any, Any], record)))
        return token

    async def list(self) -> list[Token]:
        async with translated("list tokens"):
            names = cast(dict[str, str], await aw(self.redis.hgetall(keys.tokens())))
            found = []
            for name, d in sorted(names.items()):
                h = cast(dict[str, str], await aw(self.redis.hgetall(keys.token(d))))
                if h:
                    found.append(Token(name, h["scope"], float(h["created_at"]), h.get("study", "")))
        return found

    async def revoke(self, name: str) -> bool:
        """Revoke by name; False when no such token exists."""
        async with translated(f"revoke token {name}"):
            d = cast(str | None, await aw(self.redis.hget(keys.tokens(), name)))
            if d is None:
                return False
            await self.redis.delete(keys.token(d))
            await aw(self.redis.hdel(keys.tokens(), name))
        return True

    async def verify(self, presented: str) -> Token | None:
        """The token's description if `presented` is a live token, else None."""
        d = digest(presented)
        env = self.env_token(d)
        if env is not None:
            return env
        async with translated("check a token"):
            h = cast(dict[str, str], await aw(self.redis.hgetall(keys.token(d))))
        # One round trip: revoking deletes this hash, so a revoked token fails at once.
        return from_hash(h, d)

    async def verify_and_read_device(
        self, presented: str, cloud_id: str
    ) -> tuple[Token | None, dict[str, str], Sequence[str] | None]:
        """Check a token, read a device's record and its lease owner in the same round trip
        (what `GET /api/users/{id}` answers); the owner as `app.leases.owner_view` takes it."""
        d = digest(presented)
        async with translated("check a token"):
            token_h: dict[Any, Any]
            device_h: dict[Any, Any]
            if keys.clustered():  # three hash slots: three commands at once
                token_h, device_h, owner = await asyncio.gather(
                    aw(self.redis.hgetall(keys.token(d))),
                    aw(self.redis.hgetall(keys.device(cloud_id))),
                    aw(self.redis.eval(_OWNER, 2, keys.owners(), keys.pingers(), cloud_id)),
                )
            else:
                keys_ = (keys.token(d), keys.device(cloud_id), keys.owners(), keys.pingers())
                found = await aw(self.redis.eval(_TOKEN_DEVICE_OWNER, 4, *keys_, cloud_id))
                token_flat, device_flat, owner = cast(list[Any], found)
                token_h, device_h = _pairs(token_flat), _pairs(device_flat)
        return (
            self.env_token(d) or from_hash(cast(dict[str, str], token_h), d),
            cast(dict[str, str], device_h),
            owner or None,
        )

    def env_token(self, d: str) -> Token | None:
        """An admin token named in API_TOKENS, by digest."""
        for known, name in self._env.items():
            if hmac.compare_digest(known, d):
                return Token(name, "admin", 0.0)
        return None


# One command (not a pipeline): the cheapest round trip redis-py makes. On a cluster the token,
# the device and the lease live in three slots: the lease alone, beside two plain reads.
_OWNER = OWNER_LOOKUP.format(owners="KEYS[1]", pingers="KEYS[2]") + "return lease"
_TOKEN_DEVICE_OWNER = OWNER_LOOKUP.format(owners="KEYS[3]", pingers="KEYS[4]") + (
    "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), lease}"
)


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def from_hash(h: dict[str, str], d: str) -> Token | None:
    """The token a stored hash describes, if it is the one with digest `d`."""
    if not h or not hmac.compare_digest(h.get("digest", ""), d):
        return None
    return Token(h["name"], h["scope"], float(h["created_at"]), h.get("study", ""))
