"""A certificate source tracked through the checker: a URL re-fetched on a schedule, or an upload."""

from __future__ import annotations

import datetime as dt
import enum

from tortoise import fields
from tortoise.models import Model


class SourceKind(str, enum.Enum):
    URL = "URL"
    UPLOAD = "UPLOAD"


class RefreshInterval(str, enum.Enum):
    MINUTES_15 = "MINUTES_15"
    HOURS_1 = "HOURS_1"
    HOURS_6 = "HOURS_6"
    HOURS_24 = "HOURS_24"

    @property
    def delta(self) -> dt.timedelta:
        return {
            "MINUTES_15": dt.timedelta(minutes=15),
            "HOURS_1": dt.timedelta(hours=1),
            "HOURS_6": dt.timedelta(hours=6),
            "HOURS_24": dt.timedelta(hours=24),
        }[self.value]


class TrackedSource(Model):
    id = fields.IntField(primary_key=True)
    kind = fields.CharEnumField(SourceKind, max_length=8)
    url = fields.TextField(null=True)
    server_name = fields.CharField(max_length=255, null=True)
    # URL sources: (scheme, IDNA host, port, serverName), kept when untracked
    # (tracking it again reactivates the row); NULL for uploads. Unique, so two
    # concurrent trackUrl calls make one source.
    identity = fields.CharField(max_length=512, null=True, unique=True)
    name = fields.CharField(max_length=255, null=True)
    note = fields.TextField(null=True)
    refresh_interval = fields.CharEnumField(RefreshInterval, max_length=16, null=True)
    certificate: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Certificate", related_name="tracked_sources", null=True, on_delete=fields.SET_NULL
    )
    warnings = fields.JSONField(default=list)
    last_refreshed_at = fields.DatetimeField(null=True)
    last_attempt_at = fields.DatetimeField(null=True)
    next_refresh_at = fields.DatetimeField(null=True, db_index=True)
    last_error = fields.TextField(null=True)
    last_error_code = fields.CharField(max_length=32, null=True)
    consecutive_failures = fields.IntField(default=0)
    failing_since = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    untracked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tracked_source"
