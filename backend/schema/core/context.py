"""The per-request GraphQL context."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types import Info as StrawberryInfo

from backend.errors import Forbidden
from backend.models import Role
from backend.schema.core.access import AccessMap
from backend.schema.loaders import Loaders
from backend.services.tokens import Viewer
from backend.settings import Settings


@dataclasses.dataclass
class Context:
    viewer: Viewer | None
    request_id: str
    access_map: AccessMap
    settings: Settings
    request: Any = None
    response: Any = None
    # Created when first used: a websocket connection's own context never is.
    _loaders: Loaders | None = dataclasses.field(default=None, repr=False)
    # Websocket connections only: the process's live feed, this connection,
    # and the connection_init payload (strawberry sets it).
    live: Any = None
    connection: Any = None
    connection_params: dict | None = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders()
        return self._loaders

    def for_event(self, loaders: Loaders | None) -> Context:
        """This context for one subscription event, with that event's loaders
        (a shallow copy: this runs once per delivery); None: fresh ones when used."""
        event_context = copy.copy(self)
        event_context._loaders = loaders
        return event_context

    def require_viewer(self) -> Viewer:
        if self.viewer is None:
            raise Forbidden("Not allowed.")
        return self.viewer

    def require_host(self) -> int:
        viewer = self.require_viewer()
        if viewer.role is not Role.AGENT or viewer.host_id is None:
            raise Forbidden("Only an agent token bound to a host can do this.")
        return viewer.host_id


Info = StrawberryInfo[Context, None]


class PerOperationLoaders(SchemaExtension):
    """A websocket connection keeps one context for hours: each operation on it
    (a query over the socket, a subscription's set-up) gets fresh loaders, so
    nothing is cached per connection. Subscription events get their batch's
    loaders (``backend/schema/core/execution.py``)."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if getattr(context, "connection", None) is not None:
            self.execution_context.context = context.for_event(None)
        yield
