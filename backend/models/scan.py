"""Report parts already applied: replaying one (host, scanId, part) changes nothing."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class ScanPart(Model):
    id = fields.IntField(primary_key=True)
    host: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Host", related_name="scan_parts", on_delete=fields.CASCADE
    )
    scan_id = fields.CharField(max_length=64)
    part = fields.IntField(default=0)
    scanned_at = fields.DatetimeField()
    recorded_at = fields.DatetimeField()

    class Meta:
        table = "scan_part"
        unique_together = (("host_id", "scan_id", "part"),)
