"""API tokens: only the SHA-256 of the secret is stored."""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.models import Model


class Role(str, enum.Enum):
    VIEWER = "VIEWER"
    EDITOR = "EDITOR"
    ADMIN = "ADMIN"
    AGENT = "AGENT"
    ENROLLMENT = "ENROLLMENT"


class ApiToken(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255, unique=True)
    role = fields.CharEnumField(Role, max_length=16)
    token_hash = fields.CharField(max_length=64, unique=True)
    host: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Host", related_name="tokens", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField()
    last_used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_token"
