"""Enrolment tokens: exchanged by an agent for an AGENT token bound to its host."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class EnrollmentToken(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255, unique=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    max_uses = fields.IntField(default=1)
    uses = fields.IntField(default=0)
    expires_at = fields.DatetimeField()
    created_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "enrollment_token"
