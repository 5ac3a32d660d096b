"""Field permissions, checked per field definition before execution.

Every field of every object type and interface carries an explicit rule: a set
of roles. A type declares the rule of its fields with :func:`access` and a field
overrides it with ``strawberry.field(metadata=allow(...))``. Before an operation executes,
:class:`FieldAccess` walks its document once (fragments included) and refuses
the whole operation with FORBIDDEN when any selected field is not open to the
caller's role. This costs one pass over the query, not one check per resolved
value. :func:`build_access_map` refuses to build a schema with an unguarded field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    validate,
    visit,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension

from backend.models import Role

READ = frozenset({Role.VIEWER, Role.EDITOR, Role.ADMIN})
EDIT = frozenset({Role.EDITOR, Role.ADMIN})
ADMIN = frozenset({Role.ADMIN})
AGENT = frozenset({Role.AGENT})
ENROLLMENT = frozenset({Role.ENROLLMENT})
ANYONE = frozenset(Role)

METADATA_KEY = "ctops_access"


def allow(*groups: frozenset[Role]) -> dict[str, frozenset[Role]]:
    """Field metadata: ``strawberry.field(metadata=allow(READ, AGENT))``."""
    roles: frozenset[Role] = frozenset().union(*groups)
    return {METADATA_KEY: roles}


def access(*groups: frozenset[Role]):
    """Class decorator (above ``@strawberry.type``): the rule of every field of
    the type that does not carry its own.

    The rule is written into each field's metadata, so it travels with the field
    when types are merged (the root Query) or specialised (generic connections).
    """
    roles: frozenset[Role] = frozenset().union(*groups)

    def decorate(cls):
        definition = getattr(cls, "__strawberry_definition__", None)
        if definition is None:
            raise TypeError(f"@access goes above @strawberry.type on {cls.__name__}")
        for field in definition.fields:
            if METADATA_KEY not in (field.metadata or {}):
                field.metadata = {**(field.metadata or {}), METADATA_KEY: roles}
        return cls

    return decorate


AccessMap = dict[tuple[str, str], frozenset[Role]]


def build_access_map(schema: GraphQLSchema) -> AccessMap:
    """The rule of every field; raises ``LookupError`` naming unguarded fields."""
    rules: AccessMap = {}
    missing: list[str] = []
    for name, gql_type in schema.type_map.items():
        if name.startswith("__") or not isinstance(gql_type, (GraphQLObjectType, GraphQLInterfaceType)):
            continue
        for field_name, field in gql_type.fields.items():
            strawberry_field = (field.extensions or {}).get("strawberry-definition")
            metadata = getattr(strawberry_field, "metadata", None) or {}
            rule = metadata.get(METADATA_KEY)
            if rule is None:
                missing.append(f"{name}.{field_name}")
            else:
                rules[(name, field_name)] = rule
    if missing:
        raise LookupError("Fields without a permission rule: " + ", ".join(sorted(missing)))
    return rules


def denied_fields(schema: GraphQLSchema, document: Any, rules: AccessMap, role: Role | None) -> list[str]:
    """Fields of ``document`` that ``role`` may not select (introspection is separate)."""
    type_info = TypeInfo(schema)
    denied: list[str] = []

    class Check(Visitor):
        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            parent = type_info.get_parent_type()
            name = node.name.value
            if parent is None or name.startswith("__"):
                return
            parent = get_named_type(parent)
            if parent.name.startswith("__"):
                return
            rule = rules.get((parent.name, name))
            if rule is None or role not in rule:
                denied.append(f"{parent.name}.{name}")

    visit(document, TypeInfoVisitor(type_info, Check()))
    return sorted(set(denied))


class FieldAccess(SchemaExtension):
    """Refuses an operation selecting a field the caller's role may not read.

    Queries and mutations are refused in ``on_execute``. Subscriptions are
    refused while they are validated instead, because strawberry's streaming
    path starts a subscription whatever ``on_execute`` put in the result: the
    refusal then goes out as the protocol's ``error`` message and nothing runs.
    """

    def _refusal(self) -> GraphQLError | None:
        ctx = self.execution_context
        context = ctx.context
        role = context.viewer.role if context.viewer else None
        denied = denied_fields(ctx.schema._schema, ctx.graphql_document, context.access_map, role)
        if not denied:
            return None
        return GraphQLError("Your token's role may not use: " + ", ".join(denied[:10]), extensions={"code": "FORBIDDEN"})

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None and _is_subscription(ctx) and ctx.pre_execution_errors is None:
            # Validate here (strawberry then skips its own run) so a refusal
            # can join the validation errors.
            errors = list(validate(ctx.schema._schema, ctx.graphql_document, ctx.validation_rules))
            if not errors:
                refusal = self._refusal()
                errors = [refusal] if refusal is not None else []
            ctx.pre_execution_errors = errors
        yield

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        if not _is_subscription(ctx):
            refusal = self._refusal()
            if refusal is not None:
                ctx.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield


def _is_subscription(ctx: Any) -> bool:
    from strawberry.types.graphql import OperationType

    try:
        return ctx.operation_type is OperationType.SUBSCRIPTION
    except RuntimeError:
        return False
