"""Bearer tokens with scopes, stored as SHA-256 hashes, and a per-token rate limit.

Tokens are 256-bit random strings, so a fast hash is enough (no brute force of a guessable secret is
possible, unlike passwords); lookups by hash are cached for a few seconds to keep auth off the
database on the hot path, which bounds how long a revoked token keeps working.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time

from advisor.storage import repository as repo
from advisor.storage.db import Database
from api.problems import ApiProblem

SCOPES = ("read", "submit", "admin")
TOKEN_PREFIX = "lra_"


@dataclasses.dataclass(frozen=True)
class Principal:
    token_id: int | None
    name: str
    scopes: frozenset[str]

    @property
    def key(self) -> str:
        """Who this is for rate limits and idempotency keys."""
        return f"token:{self.token_id}" if self.token_id is not None else "anonymous"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal(token_id=None, name="anonymous (auth disabled)", scopes=frozenset(SCOPES))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    scopes = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValueError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}; got {text!r}")
    return scopes


def create_token(db: Database, *, name: str, scopes: list[str]) -> tuple[int, str]:
    """A new token; the plain text is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as session:
        row = repo.add_token(
            session, name=name, prefix=token[:10], token_hash=hash_token(token), scopes=scopes
        )
        return row.id, token


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="lora-advisor"'}
    )


class TokenAuth:
    def __init__(self, db: Database, *, disabled: bool, cache_seconds: float) -> None:
        self.db, self.disabled, self.cache_seconds = db, disabled, cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def authenticate(self, authorization: str | None) -> Principal:
        if self.disabled:
            return ANONYMOUS
        if not authorization:
            raise _unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` "
                "(create one with `advisor token create`)"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be `Bearer <token>`")
        principal = self._lookup(hash_token(token.strip()))
        if principal is None:
            raise _unauthorized("unknown or revoked token")
        return principal

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal when the answer needs no database (auth off, or a cached token); else None."""
        if self.disabled:
            return ANONYMOUS
        if not authorization:
            return None
        hit = self._cache.get(hash_token(authorization.partition(" ")[2].strip()))
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def _lookup(self, token_hash: str) -> Principal | None:
        hit = self._cache.get(token_hash)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        with self.db.transaction(write=False) as session:
            row = repo.find_token(session, token_hash=token_hash)
            principal = None if row is None else Principal(row.id, row.name, frozenset(row.scopes.split(",")))
        self._cache[token_hash] = (time.monotonic() + self.cache_seconds, principal)
        return principal


class RateLimiter:
    """Token bucket per principal: `rate` requests per second sustained, bursts up to `burst`."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                retry = max(1, round((1.0 - tokens) / self.rate))
                raise ApiProblem(
                    429,
                    "too many requests",
                    f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded",
                    headers={"Retry-After": str(retry)},
                )
            self._buckets[key] = (tokens - 1.0, now)
