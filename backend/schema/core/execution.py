"""The executor every operation runs with: strawberry's, plus three things for
subscription events.

1. Per-event context. A subscription event arrives as a :class:`Delivery`:
   the value to resolve and the dataloaders of its batch, loaded once per
   process and shared by every subscriber (``backend/schema/core/live.py``).
   Its resolvers see a context whose ``loaders`` are those, so nothing is
   cached per connection (connections live for hours) and nothing is loaded
   twice for two subscribers.

2. One execution per event per distinct subscription. Dashboards open the same
   subscription many times over: subscribers of one process whose operation
   is the same (document, operation name, variables and role) get the result
   of one execution of the event, shared (the ``Delivery`` carries the batch's
   ``shared`` results). Permissions were checked per subscriber when it
   subscribed; resolvers of subscription fields depend on nothing else of the
   caller. A replayed event (``after``) is executed per subscriber.

3. A workaround for a leak in graphql-core 3.3.2 (strawberry 0.341 pins
   ``>=3.3,<3.4``; 3.3.2 is the newest release). ``Executor.collect_subfields``
   memoises in ``Executor._relevant_sub_fields``, keyed by
   ``(type, id(field_details_list))`` and holding the list alive. The per-event
   executor made by ``build_per_event_executor`` is a shallow ``copy()`` of the
   subscription's executor, so all events share that dict; every event
   collects its root fields anew, so every event adds new keys and keeps its
   field lists alive until the subscription ends: about 1.8 KB and 20 objects
   per event for a small selection (181 MB of RSS over 90,000 deliveries in
   ``tests/schema/test_subscription_execution.py``), with GC pauses growing the
   p99. Giving each per-event executor its own memo keeps memoisation within
   an event (where it pays: lists of objects) and frees it with the event.
   The same test proves the leak (without the workaround) and the fix (flat
   over 100,000 deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A subscription event: the value, the loaders of the batch it came in and,
    for live events, where subscribers of the same operation share its result."""

    value: Any
    loaders: Any
    shared: dict | None = None
    key: Any = None


class DeliveryExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, resolving each :class:`Delivery` with its loaders
    and sharing one execution per event among identical subscriptions."""

    _shared: dict | None = None
    _share_key: tuple | None = None

    def build_per_event_executor(self, payload: Any) -> Any:
        if isinstance(payload, Delivery) and payload.shared is not None:
            found = payload.shared.get((payload.key, self._operation_key()))
            if found is not None and not isinstance(found, asyncio.Future):
                return _Done(found)  # executed already for an identical subscription
        executor = super().build_per_event_executor(payload)
        if isinstance(payload, Delivery):
            executor.root_value = payload.value
            for_event = getattr(self.context_value, "for_event", None)
            if for_event is not None:
                executor.context_value = for_event(payload.loaders)
            if payload.shared is not None:
                executor._shared = payload.shared
                executor._share_key = (payload.key, self._operation_key())
        return executor

    def _operation_key(self) -> tuple:
        """What makes two subscriptions' results for one event the same."""
        key = self.__dict__.get("_ctops_operation_key")
        if key is None:
            operation = self.operation
            source = operation.loc.source.body if operation.loc is not None else id(operation)
            viewer = getattr(self.context_value, "viewer", None)
            key = (
                source,
                operation.name.value if operation.name else None,
                repr(sorted(self.variable_values.coerced.items())),
                getattr(viewer, "role", None),
            )
            self.__dict__["_ctops_operation_key"] = key
        return key

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = self._shared
        if shared is None:
            return super().execute_operation(serially)
        key = self._share_key
        found = shared.get(key)
        if found is None:
            result = super().execute_operation(serially)
            if not self.is_awaitable(result):
                shared[key] = result
                return result
            found = shared[key] = asyncio.ensure_future(result)
            found.add_done_callback(lambda done: _settle(shared, key, done))
        if isinstance(found, asyncio.Future):
            # Still running: wait without letting one subscriber's
            # cancellation cancel it for the others.
            return asyncio.shield(found)
        return found


class _Done:
    """A per-event "executor" whose result is known."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> Any:
        return self.result


def _settle(shared: dict, key: Any, done: asyncio.Future) -> None:
    """Once the shared execution is done, later subscribers take its result
    as a plain value (no future to wait on)."""
    if not done.cancelled() and done.exception() is None:
        shared[key] = done.result()
    elif shared.get(key) is done:
        del shared[key]  # failed or cancelled: the next subscriber executes anew


class CtopsExecutor(DeliveryExecutor):
    """The executor the schema uses: :class:`DeliveryExecutor` plus the
    graphql-core 3.3.2 leak workaround."""

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        if not isinstance(executor, _Done):
            # A memo of its own, freed with the event (see the module docstring).
            executor._relevant_sub_fields = {}
        return executor


class SharedParses(ParserCache):
    """Identical documents are parsed once and share one syntax tree (an LRU
    of 256): dashboards open the same subscription many times, and a parsed
    document with its tokens is ~10 KB kept for the subscription's life.

    A document that does not parse is left to strawberry's own parsing step,
    which reports it the usual way (strawberry's ``ParserCache`` would raise
    from the hook instead)."""

    def __init__(self) -> None:
        super().__init__(maxsize=256)

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        with contextlib.suppress(Exception):
            ctx.graphql_document = self.cached_parse_document(ctx.query, **ctx.parse_options)
        yield


class SharedValidations(ValidationCache):
    """Identical documents are validated once (an LRU of 256, keyed by the shared
    syntax tree and the rules): about 1.7 ms of every dashboard query.

    Goes after ``FieldAccess`` in the extension list: an operation another hook
    has validated already (a subscription, which ``FieldAccess`` validates to
    add its refusal) is left alone."""

    def __init__(self) -> None:
        super().__init__(maxsize=256)

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is None and ctx.graphql_document is not None:
            ctx.pre_execution_errors = self.cached_validate_document(
                ctx.schema._schema, ctx.graphql_document, ctx.validation_rules
            )
        yield
