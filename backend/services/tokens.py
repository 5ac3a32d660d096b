"""API tokens: 32 random bytes, URL-safe, shown once; only SHA-256 is stored.

Lookup is by the hash (an indexed equality) and then confirmed with a
constant-time comparison.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets

from tortoise.exceptions import IntegrityError

from backend import clock
from backend.db import after_commit, transaction
from backend.errors import BadUserInput, NotFound
from backend.models import ApiToken, Host, Role
from backend.services.pagination import Order, Page, keyset_page

TOKEN_PREFIX = "ctops_"
REVOKED_TOPIC = "tokens"
# Writing last_used_at on every request would turn reads into writes.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who is calling: the transport-free identity every service sees."""

    token_id: int | None
    name: str
    role: Role
    host_id: int | None = None

    @property
    def actor(self) -> str:
        return self.name


SYSTEM = Viewer(token_id=None, name="system", role=Role.ADMIN)


@dataclasses.dataclass(frozen=True)
class CreatedToken:
    secret: str
    token: ApiToken


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise BadUserInput("A token name must be 1 to 255 characters.")
    return name


async def create_token(name: str, role: Role, host_id: int | None = None) -> CreatedToken:
    name = _check_name(name)
    role = Role(role)
    if role is Role.AGENT and host_id is None:
        raise BadUserInput("An AGENT token is bound to a host: give its host.")
    if role is not Role.AGENT and host_id is not None:
        raise BadUserInput("Only AGENT tokens are bound to a host.")
    if role is Role.ENROLLMENT:
        raise BadUserInput("Enrolment tokens are created with createEnrollmentToken.")
    secret = new_secret()
    try:
        async with transaction():
            token = await ApiToken.create(
                name=name, role=role, token_hash=hash_secret(secret), host_id=host_id, created_at=clock.now()
            )
    except IntegrityError as exc:
        raise BadUserInput(f"A token named {name!r} exists already.") from exc
    return CreatedToken(secret=secret, token=token)


async def create_agent_token_for_host(hostname: str, name: str | None = None) -> CreatedToken:
    host = await Host.get_or_none(hostname=hostname.strip().lower())
    if host is None:
        raise NotFound(f"No host named {hostname!r}.")
    return await create_token(name or f"agent:{host.hostname}", Role.AGENT, host_id=host.id)


async def authenticate(secret: str) -> Viewer | None:
    """The viewer for a bearer secret, or None when unknown or revoked."""
    if not secret or len(secret) > 512:
        return None
    from backend.services import enrollment  # enrollment builds on this module

    if enrollment.is_enrollment_secret(secret):
        return await enrollment.authenticate(secret)
    digest = hash_secret(secret)
    token = await ApiToken.get_or_none(token_hash=digest)
    if token is None or token.revoked_at is not None:
        return None
    if not hmac.compare_digest(token.token_hash, digest):
        return None
    now = clock.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await ApiToken.filter(id=token.id).update(last_used_at=now)
    return Viewer(token_id=token.id, name=token.name, role=Role(token.role), host_id=token.host_id)


TOKEN_ORDER = Order(("id",))


async def list_tokens(first: int | None = None, after: str | None = None) -> Page[ApiToken]:
    return await keyset_page(ApiToken.all(), TOKEN_ORDER, first, after)


async def revoke_token(*, id: int | None = None, name: str | None = None) -> ApiToken:
    token = await (ApiToken.get_or_none(id=id) if id is not None else ApiToken.get_or_none(name=name))
    if token is None:
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = clock.now()
        async with transaction():
            await ApiToken.filter(id=token.id, revoked_at__isnull=True).update(revoked_at=token.revoked_at)
            # Open websocket connections of this token close (every replica).
            after_commit(REVOKED_TOPIC, {"revoked": [token.id]})
    return token


async def has_any_token() -> bool:
    return await ApiToken.all().first() is not None


async def bootstrap_admin() -> CreatedToken | None:
    """On the first start of an empty database: one admin token, printed once."""
    if await has_any_token():
        return None
    return await create_token("admin", Role.ADMIN)
