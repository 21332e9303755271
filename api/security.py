"""Bearer tokens with scopes, stored as SHA-256 hashes, and a per-token rate limit.

Tokens are 256-bit random strings, so a fast hash is enough (no brute force of a guessable secret is
possible, unlike passwords); lookups by hash are cached for a few seconds to keep auth off the
database on the hot path. A token revoked through the API leaves this process's cache at once; one revoked
by another process (`advisor token revoke`) within REVOCATION_CHECK_SECONDS, when the cache sees the count
of revoked tokens change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time

from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.errors import StorageError
from advisor.storage.models import ApiToken
from api.problems import ApiProblem
from api.schemas import TokenOut

SCOPES = ("read", "submit", "admin")
TOKEN_PREFIX = "lra_"
REVOCATION_CHECK_SECONDS = 1.0  # how soon a token revoked by another process stops working here


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

    def require_owner(self, owner_token_id: int | None, what: str) -> None:
        """Only the token that submitted `what`, or an admin token, may change it: a submit scope alone
        once let any token cancel anyone's study."""
        if self.allows("admin") or (owner_token_id is not None and owner_token_id == self.token_id):
            return
        raise ApiProblem(
            403, "forbidden", f"only the token that submitted {what}, or an admin token, may change it"
        )


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


def token_out(row: ApiToken) -> TokenOut:
    """A token as listings show it: never its hash, only the prefix a user can recognise it by."""
    return TokenOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=row.scopes.split(","),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def list_tokens(db: Database) -> list[TokenOut]:
    with db.transaction(write=False) as session:
        return [token_out(row) for row in repo.list_tokens(session)]


def revoke_token(db: Database, *, token_id: int) -> TokenOut:
    """Revokes the token (NotFound when there is none); TokenAuth.forget drops it from a server's cache."""
    with db.transaction() as session:
        return token_out(repo.revoke_token(session, token_id=token_id))


def bearer_token(authorization: str | None) -> str | None:
    """The token of a `Bearer <token>` header (the scheme matched without case, as RFC 9110 has it); None
    for any other scheme, which no cache or lookup may then accept."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="lora-advisor"'}
    )


class TokenAuth:
    def __init__(self, db: Database, *, disabled: bool, cache_seconds: float) -> None:
        self.db, self.disabled, self.cache_seconds = db, disabled, cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._revoked_count: int | None = None  # revoked tokens in the database when last looked
        self._revocations_checked_until = 0.0  # monotonic time of the next look

    def authenticate(self, authorization: str | None) -> Principal:
        if self.disabled:
            return ANONYMOUS
        if not authorization:
            raise _unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` "
                "(create one with `advisor token create`)"
            )
        token = bearer_token(authorization)
        if token is None:
            raise _unauthorized("the Authorization header must be `Bearer <token>`")
        self._notice_revocations()
        principal = self._lookup(hash_token(token))
        if principal is None:
            raise _unauthorized("unknown or revoked token")
        return principal

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal when the answer needs no database (auth off, or a cached token); else None."""
        if self.disabled:
            return ANONYMOUS
        token = bearer_token(authorization)  # the scheme is checked on every request, cached or not
        now = time.monotonic()
        if token is None or now >= self._revocations_checked_until:
            return None  # authenticate answers: with the 401, or after looking for revocations
        hit = self._cache.get(hash_token(token))
        return hit[1] if hit and hit[0] > now else None

    def forget(self, token_id: int) -> None:
        """Drops a revoked token from the cache, so that it stops working here at once."""
        for token_hash, (_, principal) in list(self._cache.items()):
            if principal is not None and principal.token_id == token_id:
                self._cache.pop(token_hash, None)

    def _notice_revocations(self) -> None:
        """Empties the cache when the count of revoked tokens changed since the last look (at most one look
        per REVOCATION_CHECK_SECONDS): a token revoked by another process stops working here too."""
        now = time.monotonic()
        if now < self._revocations_checked_until:
            return
        self._revocations_checked_until = now + REVOCATION_CHECK_SECONDS
        try:
            with self.db.transaction(write=False) as session:
                count = repo.revoked_token_count(session)
        except StorageError:
            return  # during an outage cached tokens keep answering until they expire, as before
        if count != self._revoked_count:
            self._cache.clear()
            self._revoked_count = count

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
