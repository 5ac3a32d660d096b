"""API tokens (ADMIN) and the viewer."""

from __future__ import annotations

import datetime as dt

import strawberry

from backend.models import ApiToken as TokenModel
from backend.models import Role as RoleEnum
from backend.schema.core.access import ADMIN, ANYONE, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, from_global_id, to_global_id
from backend.services import tokens

Role = strawberry.enum(RoleEnum, description="VIEWER reads; EDITOR also imports and edits rules; ADMIN does everything; AGENT reports for its own host; ENROLLMENT only enrolls an agent.")


@access(ANYONE)
@strawberry.type(description="Who is calling.")
class Viewer:
    name: str
    role: Role


@access(ADMIN)
@strawberry.type
class ApiToken(Node):
    name: str
    role: Role
    host_id: strawberry.ID | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_model(cls, m: TokenModel) -> ApiToken:
        return cls(
            id=to_global_id("ApiToken", m.id),
            name=m.name,
            role=RoleEnum(m.role),
            host_id=to_global_id("Host", m.host_id) if m.host_id else None,
            created_at=m.created_at,
            last_used_at=m.last_used_at,
            revoked_at=m.revoked_at,
        )


@strawberry.input
class CreateApiTokenInput:
    name: str
    role: Role
    host_id: strawberry.ID | None = strawberry.field(default=None, description="Required for AGENT tokens.")


@access(ADMIN)
@strawberry.type
class CreateApiTokenPayload:
    token: str = strawberry.field(description="The secret, shown this once.")
    api_token: ApiToken


@access(ANYONE)
@strawberry.type
class ViewerQueries:
    @strawberry.field
    def viewer(self, info: Info) -> Viewer:
        v = info.context.require_viewer()
        return Viewer(name=v.name, role=v.role)


@access(ADMIN)
@strawberry.type
class TokenQueries:
    @strawberry.field
    async def api_tokens(self, first: int | None = None, after: str | None = None) -> Connection[ApiToken]:
        page = await tokens.list_tokens(first, after)
        return Connection[ApiToken].from_page(page, ApiToken.from_model, lambda: TokenModel.all().count())


@access(ADMIN)
@strawberry.type
class TokenMutations:
    @strawberry.mutation(description="Create a token; its secret is in the payload, once.")
    async def create_api_token(self, input: CreateApiTokenInput) -> CreateApiTokenPayload:
        host_id = from_global_id(input.host_id, "Host")[1] if input.host_id else None
        created = await tokens.create_token(input.name, RoleEnum(input.role), host_id=host_id)
        return CreateApiTokenPayload(token=created.secret, api_token=ApiToken.from_model(created.token))

    @strawberry.mutation
    async def revoke_api_token(self, id: strawberry.ID) -> ApiToken:
        return ApiToken.from_model(await tokens.revoke_token(id=from_global_id(id, "ApiToken")[1]))
