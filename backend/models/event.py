"""The append-only certificate event timeline.

Code only ever inserts events: there is no update and no delete. The keys of
``details`` per type are documented in ``docs/events.md``.
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class EventType(str, enum.Enum):
    DISCOVERED = "DISCOVERED"
    IMPORTED = "IMPORTED"
    RENEWED = "RENEWED"
    EXPIRY_CHANGED = "EXPIRY_CHANGED"
    REMOVED_FROM_HOST = "REMOVED_FROM_HOST"
    RESTORED = "RESTORED"
    STATUS_CHANGED = "STATUS_CHANGED"
    EXPIRED = "EXPIRED"
    REFRESH_FAILED = "REFRESH_FAILED"
    REFRESH_RECOVERED = "REFRESH_RECOVERED"
    UNTRACKED = "UNTRACKED"


class CertificateEvent(Model):
    id = fields.IntField(primary_key=True)
    type = fields.CharEnumField(EventType, max_length=24)
    occurred_at = fields.DatetimeField()
    certificate: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Certificate", related_name="events", on_delete=fields.CASCADE
    )
    host: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Host", related_name="events", null=True, on_delete=fields.SET_NULL
    )
    location: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.CertificateLocation", related_name="events", null=True, on_delete=fields.SET_NULL
    )
    tracked_source: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.TrackedSource", related_name="events", null=True, on_delete=fields.SET_NULL
    )
    actor = fields.CharField(max_length=255, default="system")
    details = fields.JSONField(default=dict)

    class Meta:
        table = "certificate_event"
        indexes = (
            Index(fields=("certificate_id", "id"), name="event_certificate"),
            Index(fields=("host_id", "id"), name="event_host"),
            Index(fields=("tracked_source_id", "id"), name="event_source"),
            Index(fields=("occurred_at",), name="event_occurred_at"),
        )
