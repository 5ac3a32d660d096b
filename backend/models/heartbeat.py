"""The last beat of each periodic runner (worker or embedded), shown in /readyz."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Heartbeat(Model):
    id = fields.IntField(primary_key=True)
    component = fields.CharField(max_length=64, unique=True)
    beat_at = fields.DatetimeField()
    detail = fields.JSONField(default=dict)

    class Meta:
        table = "heartbeat"
