"""A host that runs an agent (or did)."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Host(Model):
    id = fields.IntField(primary_key=True)
    hostname = fields.CharField(max_length=255, unique=True)
    os = fields.CharField(max_length=255, null=True)
    agent_version = fields.CharField(max_length=64, null=True)
    interval_seconds = fields.IntField(null=True)
    last_report_at = fields.DatetimeField(null=True)
    # `scannedAt` of the newest scan applied: an older report is stale.
    last_scanned_at = fields.DatetimeField(null=True)
    scan_errors = fields.JSONField(default=list)
    retired_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "host"

    def __str__(self) -> str:
        return self.hostname
