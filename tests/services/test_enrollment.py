"""Enrolment tokens and enrolling agents, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from backend import clock
from backend.errors import BadUserInput, Unauthenticated
from backend.models import ApiToken, EnrollmentToken, Host, Role
from backend.services import enrollment, tokens


async def test_a_token_is_shown_once_and_stored_hashed(database):
    created = await enrollment.create_enrollment_token("rollout", max_uses=3, expires_in_hours=2)
    assert created.secret.startswith("ctops_enr_") and len(created.secret) > 40
    row = await EnrollmentToken.get(name="rollout")
    assert row.token_hash == tokens.hash_secret(created.secret) and created.secret not in row.token_hash
    assert enrollment.uses_left(row) == 3
    assert row.expires_at - row.created_at == dt.timedelta(hours=2)
    viewer = await tokens.authenticate(created.secret)
    assert (viewer.role, viewer.name, viewer.token_id) == (Role.ENROLLMENT, "rollout", row.id)


@pytest.mark.parametrize(("name", "uses", "hours"), [("", 1, 1), ("x", 0, 1), ("x", 1, 0), ("x", 10_001, 1)])
async def test_bad_token_settings_are_refused(database, name, uses, hours):
    with pytest.raises(BadUserInput):
        await enrollment.create_enrollment_token(name, uses, hours)


async def test_enrolling_makes_a_host_and_an_agent_token_bound_to_it(database):
    created = await enrollment.create_enrollment_token("one")
    enrolled = await enrollment.enroll_agent(created.token.id, "  Web-1.Example.COM ", "Debian 12", "1.0")
    assert (enrolled.host.hostname, enrolled.host.os, enrolled.host.agent_version) == ("web-1.example.com", "Debian 12", "1.0")
    viewer = await tokens.authenticate(enrolled.secret)
    assert (viewer.role, viewer.host_id, viewer.name) == (Role.AGENT, enrolled.host.id, "agent:web-1.example.com")
    assert await tokens.authenticate(created.secret) is None  # used up
    with pytest.raises(Unauthenticated):
        await enrollment.enroll_agent(created.token.id, "web-2")


async def test_enrolling_again_reuses_the_host_and_revokes_its_earlier_agent_tokens(database):
    created = await enrollment.create_enrollment_token("two", max_uses=2)
    first = await enrollment.enroll_agent(created.token.id, "db-1")
    await Host.filter(id=first.host.id).update(retired_at=clock.now())
    second = await enrollment.enroll_agent(created.token.id, "DB-1")
    assert second.host.id == first.host.id and second.host.retired_at is None
    assert await tokens.authenticate(first.secret) is None
    assert (await tokens.authenticate(second.secret)).host_id == first.host.id
    names = await ApiToken.filter(host_id=first.host.id).order_by("id").values_list("name", flat=True)
    assert names == ["agent:db-1", "agent:db-1#2"]


async def test_expired_and_revoked_tokens_enrol_nothing(database):
    expired = await enrollment.create_enrollment_token("expired")
    await EnrollmentToken.filter(id=expired.token.id).update(expires_at=clock.now() - dt.timedelta(seconds=1))
    revoked = await enrollment.create_enrollment_token("revoked")
    await enrollment.revoke_enrollment_token(revoked.token.id)
    for created in (expired, revoked):
        assert await tokens.authenticate(created.secret) is None
        with pytest.raises(Unauthenticated):
            await enrollment.enroll_agent(created.token.id, "host")
    assert await Host.all().count() == 0


async def test_concurrent_enrolments_never_exceed_max_uses(database):
    created = await enrollment.create_enrollment_token("race", max_uses=2)
    results = await asyncio.gather(
        *(enrollment.enroll_agent(created.token.id, f"host-{i}") for i in range(6)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 2
    assert all(isinstance(r, Unauthenticated) for r in results if isinstance(r, Exception))
    assert (await EnrollmentToken.get(id=created.token.id)).uses == 2
    assert await Host.all().count() == 2
