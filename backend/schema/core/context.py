"""The per-request GraphQL context."""

from __future__ import annotations

import dataclasses
from typing import Any

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
    loaders: Loaders = dataclasses.field(default_factory=Loaders)

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
