"""Notification channels and every attempt to notify one.

A channel's secret material (a webhook's signing secret, a Slack incoming-webhook
URL) is stored only encrypted (Fernet, ``backend/secret_box.py``) in
``secret_encrypted``; ``config`` holds what may be shown (a webhook's URL, an
e-mail channel's recipients).

Each attempt is a ``NotificationDelivery`` row. A failed attempt schedules the
next one as a new PENDING row with ``next_attempt_at``; a database-driven tick
sends what is due by the clock (``backend/services/notify.py``).
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class ChannelKind(str, enum.Enum):
    WEBHOOK = "WEBHOOK"
    SLACK = "SLACK"
    EMAIL = "EMAIL"


class DeliveryKind(str, enum.Enum):
    FIRED = "FIRED"
    RESOLVED = "RESOLVED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    TEST = "TEST"


class DeliveryStatus(str, enum.Enum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class NotificationChannel(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255)
    kind = fields.CharEnumField(ChannelKind, max_length=16)
    enabled = fields.BooleanField(default=True)
    config = fields.JSONField(default=dict)
    secret_encrypted = fields.TextField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    last_delivery_at = fields.DatetimeField(null=True)
    # Deleted channels keep their row: their deliveries still name them.
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notification_channel"


class NotificationDelivery(Model):
    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.NotificationChannel", related_name="deliveries", on_delete=fields.CASCADE
    )
    alert: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Alert", related_name="deliveries", null=True, on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(DeliveryKind, max_length=16)
    attempt = fields.IntField(default=1)
    # The first attempt's id, shared by every retry of one notification (the
    # X-CTOps-Delivery header, so receivers can drop duplicates); NULL on it.
    first_attempt_id = fields.IntField(null=True)
    status = fields.CharEnumField(DeliveryStatus, max_length=16)
    response_code = fields.IntField(null=True)
    error = fields.TextField(null=True)
    # The message as first sent (no secrets): retries resend it unchanged.
    payload = fields.JSONField(null=True)
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)
    next_attempt_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notification_delivery"
        indexes = (
            Index(fields=("status", "next_attempt_at"), name="delivery_due"),
            Index(fields=("alert_id", "id"), name="delivery_alert"),
            Index(fields=("channel_id", "id"), name="delivery_channel"),
        )
