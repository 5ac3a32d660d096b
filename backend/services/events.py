"""Recording timeline events: many rows in one statement, published after commit.

Events are only ever inserted. :func:`record` writes them inside the caller's
transaction and queues their ids on the ``events`` topic, which the bus
publishes once the outermost transaction commits (``backend.db.transaction``).
The ``details`` keys per type are documented in ``docs/events.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from backend.db import after_commit
from backend.models import CertificateEvent, EventType
from backend.services import bulk

TOPIC = "events"

# Why a place stopped holding a certificate: REMOVED_FROM_HOST's ``reason``.
MISSING = "MISSING"  # a complete scan did not find it
REPLACED = "REPLACED"  # another certificate, with no name in common, took its place
HOST_RETIRED = "HOST_RETIRED"  # retireHost

_json = CertificateEvent._meta.fields_map["details"].encoder

TABLE = bulk.Table(
    "certificate_event",
    (
        ("type", "text"), ("occurred_at", "timestamptz"), ("certificate_id", "int4"), ("host_id", "int4"),
        ("location_id", "int4"), ("tracked_source_id", "int4"), ("actor", "text"), ("details", "jsonb"),
    ),
)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    type: EventType
    certificate_id: int
    host_id: int | None = None
    location_id: int | None = None
    tracked_source_id: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def place_details(location: Any) -> dict[str, Any]:
    """The place keys of DISCOVERED, RESTORED and REMOVED_FROM_HOST details (a
    location row or a report item: anything with these attributes)."""
    kind = location.kind
    return {
        "kind": getattr(kind, "value", kind),
        "path": location.path,
        "index": location.index,
        "alias": location.alias,
        "address": location.address,
        "port": location.port,
        "serverName": location.server_name,
    }


async def record(conn: Any, events: Sequence[NewEvent], *, actor: str, now: dt.datetime) -> list[int]:
    """Insert ``events`` (in order) and publish their ids after commit; returns the ids."""
    if not events:
        return []
    rows = [
        (e.type.value, now, e.certificate_id, e.host_id, e.location_id, e.tracked_source_id, actor, _json(e.details))
        for e in events
    ]
    ids = sorted(r["id"] for r in await bulk.insert(conn, TABLE, rows, returning=("id",)))
    after_commit(TOPIC, {"ids": ids})
    return ids
