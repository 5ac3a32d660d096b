"""The root schema: one Query and one Mutation merged from the domain modules."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.tools import merge_types

from backend.schema.certificates import Certificate, CertificateLocation, CertificateQueries
from backend.schema.core.access import READ, FieldAccess, access
from backend.schema.core.context import Info
from backend.schema.core.errors import ErrorCodes
from backend.schema.core.relay import Node, from_global_id
from backend.schema.events import CertificateEvent, EventQueries
from backend.schema.hosts import Host, HostQueries
from backend.schema.tokens import TokenMutations, TokenQueries, ViewerQueries
from backend.schema.tracked_sources import TrackedSource
from backend.settings import Settings


@access(READ)
@strawberry.type
class NodeQueries:
    @strawberry.field(description="Any object by its global id; null when nothing matches.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        from backend.services import inventory

        type_name, pk = from_global_id(id)
        loaders = info.context.loaders
        if type_name == "Certificate":
            return Certificate.from_model(await loaders.certificate.load(pk))
        if type_name == "Host":
            return Host.from_model(await loaders.host.load(pk))
        if type_name == "CertificateEvent":
            return CertificateEvent.from_model(await inventory.get_event(pk))
        if type_name == "TrackedSource":
            return TrackedSource.from_model(await loaders.tracked_source.load(pk))
        if type_name == "CertificateLocation":
            row = await loaders.location.load(pk)
            return None if row is None else CertificateLocation.from_model(row)
        return None


Query = merge_types("Query", (ViewerQueries, NodeQueries, CertificateQueries, HostQueries, EventQueries, TokenQueries))
Mutation = merge_types("Mutation", (TokenMutations,))


class CtopsSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        """Errors are coded, masked and logged (once, with the request id) by ErrorCodes."""


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    depth = settings.max_query_depth if settings else 12
    tokens = settings.max_query_tokens if settings else 5000
    aliases = settings.max_aliases if settings else 30
    extensions = [
        ErrorCodes,
        lambda: QueryDepthLimiter(max_depth=depth),
        lambda: MaxTokensLimiter(max_token_count=tokens),
        lambda: MaxAliasesLimiter(max_alias_count=aliases),
        FieldAccess,
    ]
    if settings is not None and not settings.public_schema:
        from strawberry.extensions import DisableIntrospection

        extensions.append(DisableIntrospection)
    return CtopsSchema(query=Query, mutation=Mutation, types=[CertificateLocation], extensions=extensions)


def export_schema() -> str:
    return build_schema().as_str() + "\n"
