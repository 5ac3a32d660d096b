"""Enrolment: an agent trades a short-lived enrolment token for an AGENT token bound to its host.

Enrolment secrets look like ``ctops_enr_<32 random bytes, URL-safe>``; only
their SHA-256 is stored. Each use is counted by one conditional UPDATE (``uses
< max_uses``, not revoked, not expired), so concurrent enrolments never exceed
``maxUses``. Enrolling a hostname that exists binds the new token to that host,
revokes its earlier agent tokens and brings a retired host back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import secrets

from tortoise.exceptions import IntegrityError

from backend import clock
from backend.db import transaction
from backend.errors import BadUserInput, NotFound, Unauthenticated
from backend.models import ApiToken, EnrollmentToken, Host, Role
from backend.services import bulk, hosts, tokens
from backend.services.pagination import Order, Page, keyset_page

PREFIX = "ctops_enr_"
MAX_USES = 10_000
MAX_EXPIRES_IN_HOURS = 24 * 365
AGENT_TOKEN_PREFIX = "agent:"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def is_enrollment_secret(secret: str) -> bool:
    return secret.startswith(PREFIX)


def uses_left(token: EnrollmentToken) -> int:
    return max(0, token.max_uses - token.uses)


def normalise_hostname(hostname: str) -> str:
    name = (hostname or "").strip().lower()
    if not name or len(name) > 255 or any(c.isspace() or not c.isprintable() for c in name):
        raise BadUserInput("A hostname is 1 to 255 printable characters without spaces.")
    return name


@dataclasses.dataclass(frozen=True)
class CreatedEnrollmentToken:
    secret: str
    token: EnrollmentToken


async def create_enrollment_token(name: str, max_uses: int = 1, expires_in_hours: int = 24) -> CreatedEnrollmentToken:
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise BadUserInput("An enrolment token name must be 1 to 255 characters.")
    if not 1 <= max_uses <= MAX_USES:
        raise BadUserInput(f"maxUses must be between 1 and {MAX_USES}.")
    if not 1 <= expires_in_hours <= MAX_EXPIRES_IN_HOURS:
        raise BadUserInput(f"expiresInHours must be between 1 and {MAX_EXPIRES_IN_HOURS}.")
    secret = new_secret()
    now = clock.now()
    try:
        async with transaction():
            token = await EnrollmentToken.create(
                name=name,
                token_hash=tokens.hash_secret(secret),
                max_uses=max_uses,
                expires_at=now + dt.timedelta(hours=expires_in_hours),
                created_at=now,
            )
    except IntegrityError as exc:
        raise BadUserInput(f"An enrolment token named {name!r} exists already.") from exc
    return CreatedEnrollmentToken(secret=secret, token=token)


ORDER = Order(("id",))


async def list_enrollment_tokens(first: int | None = None, after: str | None = None) -> Page[EnrollmentToken]:
    return await keyset_page(EnrollmentToken.all(), ORDER, first, after)


async def revoke_enrollment_token(id: int) -> EnrollmentToken:
    token = await EnrollmentToken.get_or_none(id=id)
    if token is None:
        raise NotFound("No such enrolment token.")
    if token.revoked_at is None:
        token.revoked_at = clock.now()
        async with transaction():
            await EnrollmentToken.filter(id=id, revoked_at__isnull=True).update(revoked_at=token.revoked_at)
    return token


def usable(token: EnrollmentToken, now: dt.datetime | None = None) -> bool:
    now = now or clock.now()
    return token.revoked_at is None and token.expires_at > now and token.uses < token.max_uses


async def authenticate(secret: str) -> tokens.Viewer | None:
    """The ENROLLMENT viewer for a usable enrolment secret (None when unknown,
    revoked, expired or used up)."""
    digest = tokens.hash_secret(secret)
    token = await EnrollmentToken.get_or_none(token_hash=digest)
    if token is None or not hmac.compare_digest(token.token_hash, digest) or not usable(token):
        return None
    return tokens.Viewer(token_id=token.id, name=token.name, role=Role.ENROLLMENT)


@dataclasses.dataclass(frozen=True)
class EnrolledAgent:
    secret: str
    """The AGENT token, shown this once."""
    host: Host
    token: ApiToken


async def enroll_agent(
    enrollment_token_id: int, hostname: str, os: str | None = None, agent_version: str | None = None
) -> EnrolledAgent:
    hostname = normalise_hostname(hostname)
    now = clock.now()
    async with transaction() as conn:
        used = await bulk.fetch(
            conn,
            "UPDATE enrollment_token SET uses = uses + 1 WHERE id = ? AND revoked_at IS NULL AND expires_at > ?"
            " AND uses < max_uses RETURNING id",
            [enrollment_token_id, now],
        )
        if not used:
            raise Unauthenticated("This enrolment token is used up, expired or revoked.")
        await bulk.execute(
            conn,
            "INSERT INTO host (hostname, scan_errors, created_at) VALUES (?, ?, ?) ON CONFLICT (hostname) DO NOTHING",
            [hostname, "[]", now],
        )
        host = await Host.filter(hostname=hostname).select_for_update().get()
        if os:
            host.os = os[:255]
        if agent_version:
            host.agent_version = agent_version[:64]
        host.retired_at = None
        await host.save(update_fields=["os", "agent_version", "retired_at"])
        await hosts.revoke_tokens_of_host(host.id, now, role=Role.AGENT)
        created = await tokens.create_token(await _agent_token_name(host), Role.AGENT, host_id=host.id)
    return EnrolledAgent(secret=created.secret, host=host, token=created.token)


async def _agent_token_name(host: Host) -> str:
    """``agent:<hostname>``, numbered from the second enrolment on (names are unique)."""
    base = (AGENT_TOKEN_PREFIX + host.hostname)[:240]
    taken = set(await ApiToken.filter(name__startswith=base).values_list("name", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}#{n}" in taken:
        n += 1
    return f"{base}#{n}"
