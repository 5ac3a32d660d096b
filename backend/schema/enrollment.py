"""Enrolment tokens (ADMIN) and enrollAgent (ENROLLMENT: the only thing such a token can do)."""

from __future__ import annotations

import datetime as dt

import strawberry

from backend.models import EnrollmentToken as EnrollmentTokenModel
from backend.schema.core.access import ADMIN, ENROLLMENT, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, from_global_id, to_global_id
from backend.schema.hosts import Host
from backend.services import enrollment


@access(ADMIN)
@strawberry.type
class EnrollmentToken(Node):
    name: str
    max_uses: int
    uses_left: int
    expires_at: dt.datetime
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @classmethod
    def from_model(cls, m: EnrollmentTokenModel) -> EnrollmentToken:
        return cls(
            id=to_global_id("EnrollmentToken", m.id),
            name=m.name,
            max_uses=m.max_uses,
            uses_left=enrollment.uses_left(m),
            expires_at=m.expires_at,
            created_at=m.created_at,
            revoked_at=m.revoked_at,
        )


@strawberry.input
class CreateEnrollmentTokenInput:
    name: str
    max_uses: int = 1
    expires_in_hours: int = 24


@access(ADMIN)
@strawberry.type
class CreateEnrollmentTokenPayload:
    token: str = strawberry.field(description="The secret (`ctops_enr_...`), shown this once.")
    enrollment_token: EnrollmentToken


@strawberry.input
class EnrollAgentInput:
    hostname: str
    os: str | None = None
    agent_version: str | None = None


@access(ENROLLMENT)
@strawberry.type
class EnrollAgentPayload:
    agent_token: str = strawberry.field(description="The AGENT token bound to the host, shown this once.")
    host: Host


@access(ADMIN)
@strawberry.type
class EnrollmentQueries:
    @strawberry.field
    async def enrollment_tokens(self, first: int | None = None, after: str | None = None) -> Connection[EnrollmentToken]:
        page = await enrollment.list_enrollment_tokens(first, after)
        return Connection[EnrollmentToken].from_page(
            page, EnrollmentToken.from_model, lambda: EnrollmentTokenModel.all().count()
        )


@access(ADMIN)
@strawberry.type
class EnrollmentMutations:
    @strawberry.mutation(description="A token agents enrol with; its secret is in the payload, once.")
    async def create_enrollment_token(self, input: CreateEnrollmentTokenInput) -> CreateEnrollmentTokenPayload:
        created = await enrollment.create_enrollment_token(input.name, input.max_uses, input.expires_in_hours)
        return CreateEnrollmentTokenPayload(
            token=created.secret, enrollment_token=EnrollmentToken.from_model(created.token)
        )

    @strawberry.mutation
    async def revoke_enrollment_token(self, id: strawberry.ID) -> EnrollmentToken:
        token = await enrollment.revoke_enrollment_token(from_global_id(id, "EnrollmentToken")[1])
        return EnrollmentToken.from_model(token)


@access(ENROLLMENT)
@strawberry.type
class AgentEnrollmentMutations:
    @strawberry.mutation(
        description="Sent with an enrolment token: registers the host (or finds it by hostname) and returns an"
        " AGENT token bound to it; the host's earlier agent tokens are revoked."
    )
    async def enroll_agent(self, info: Info, input: EnrollAgentInput) -> EnrollAgentPayload:
        viewer = info.context.require_viewer()
        enrolled = await enrollment.enroll_agent(viewer.token_id, input.hostname, input.os, input.agent_version)
        return EnrollAgentPayload(agent_token=enrolled.secret, host=Host.from_model(enrolled.host))
