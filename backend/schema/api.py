"""The root schema: one Query, one Mutation and one Subscription merged from the domain modules."""

from __future__ import annotations

import strawberry
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.tools import merge_types

from backend.schema.alerts import Alert, AlertMutations, AlertQueries, AlertRule, AlertSubscriptions
from backend.schema.certificates import Certificate, CertificateLocation, CertificateQueries
from backend.schema.core.access import READ, FieldAccess, access
from backend.schema.core.context import Info, PerOperationLoaders
from backend.schema.core.errors import ErrorCodes, mask
from backend.schema.core.execution import CtopsExecutor, SharedParses, SharedValidations
from backend.schema.core.relay import Node, from_global_id
from backend.schema.events import CertificateEvent, EventQueries, EventSubscriptions
from backend.schema.expiry import ExpirySubscriptions, SweepMutations
from backend.schema.enrollment import AgentEnrollmentMutations, EnrollmentMutations, EnrollmentQueries
from backend.schema.hosts import Host, HostMutations, HostQueries
from backend.schema.ingest import IngestMutations
from backend.schema.notifications import NotificationChannel, NotificationDelivery, NotificationMutations, NotificationQueries
from backend.schema.tokens import TokenMutations, TokenQueries, ViewerQueries
from backend.schema.checker import CheckerQueries
from backend.schema.tracked_sources import TrackedSource, TrackedSourceMutations, TrackedSourceQueries
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
        if type_name in ("AlertRule", "Alert", "NotificationChannel", "NotificationDelivery"):
            from backend.schema.alerts import alert_loaders
            from backend.models import NotificationDelivery as DeliveryModel

            found = alert_loaders(info)
            if type_name == "AlertRule":
                return AlertRule.from_model(await found.rule.load(pk))
            if type_name == "Alert":
                return Alert.from_model(await found.alert.load(pk))
            if type_name == "NotificationChannel":
                return NotificationChannel.from_model(await found.channel.load(pk))
            return NotificationDelivery.from_model(await DeliveryModel.get_or_none(id=pk))
        return None


Query = merge_types("Query", (ViewerQueries, NodeQueries, CertificateQueries, HostQueries, EventQueries, TokenQueries, EnrollmentQueries, CheckerQueries, TrackedSourceQueries, AlertQueries, NotificationQueries))
Mutation = merge_types("Mutation", (TokenMutations, EnrollmentMutations, AgentEnrollmentMutations, IngestMutations, HostMutations, SweepMutations, TrackedSourceMutations, AlertMutations, NotificationMutations))
Subscription = merge_types("Subscription", (EventSubscriptions, ExpirySubscriptions, AlertSubscriptions))


class CtopsSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        """Errors are coded, masked and logged (once, with the request id) by ErrorCodes.

        Results sent over a websocket or streamed (each subscription event) go
        out before the operation ends, so they are coded here, in place, as
        they pass."""
        context = getattr(execution_context, "context", None)
        if errors and (getattr(context, "connection", None) is not None or _streamed(execution_context)):
            errors[:] = mask(errors, getattr(context, "request_id", None))


def _streamed(execution_context) -> bool:
    from strawberry.types.graphql import OperationType

    try:
        return execution_context.operation_type is OperationType.SUBSCRIPTION
    except Exception:  # no parsed operation
        return False


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    depth = settings.max_query_depth if settings else 12
    tokens = settings.max_query_tokens if settings else 5000
    aliases = settings.max_aliases if settings else 30
    # The depth and alias rules are built once: their extensions would build
    # new rule classes for every operation (and a subscription keeps its own
    # for hours).
    limits = [
        *QueryDepthLimiter(max_depth=depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=aliases).validation_rules,
    ]
    extensions = [
        SharedParses,
        PerOperationLoaders,
        ErrorCodes,
        lambda: AddValidationRules(limits),
        lambda: MaxTokensLimiter(max_token_count=tokens),
        FieldAccess,
        SharedValidations,  # after FieldAccess: see its docstring
    ]
    if settings is not None and not settings.public_schema:
        from strawberry.extensions import DisableIntrospection

        extensions.append(DisableIntrospection)
    return CtopsSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[CertificateLocation],
        extensions=extensions,
        execution_context_class=CtopsExecutor,
    )


def export_schema() -> str:
    return build_schema().as_str() + "\n"
