"""Alert rules and the alerts they fire.

One open alert per (rule, certificate) — or (rule, tracked source), (rule,
host) — is enforced by the database: ``open_key`` is unique and nullable,
``rule:<id>:cert:<fingerprint>`` (``…:source:<id>``, ``…:host:<id>``) while the
alert is open and NULL once it is resolved (tortoise 1.1.9 has no portable
partial unique index). Evaluators insert with conflict-ignore, so two of them
racing create one alert and only the winner notifies.
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class AlertSeverity(str, enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


#: Higher is more severe.
SEVERITY_RANK = {AlertSeverity.INFO: 0, AlertSeverity.WARNING: 1, AlertSeverity.CRITICAL: 2}


class AlertState(str, enum.Enum):
    FIRING = "FIRING"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class AlertRuleKind(str, enum.Enum):
    EXPIRY = "EXPIRY"
    SOURCE_FAILING = "SOURCE_FAILING"
    HOST_STALE = "HOST_STALE"


class AlertResolution(str, enum.Enum):
    RENEWED = "RENEWED"
    REMOVED = "REMOVED"
    UNTRACKED = "UNTRACKED"
    RULE_DELETED = "RULE_DELETED"
    NO_LONGER_MATCHES = "NO_LONGER_MATCHES"
    RECOVERED = "RECOVERED"


class AlertRule(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255)
    kind = fields.CharEnumField(AlertRuleKind, max_length=16)
    threshold_days = fields.IntField(null=True)
    failing_for_hours = fields.IntField(null=True)
    severity = fields.CharEnumField(AlertSeverity, max_length=16)
    # The filter, as columns so evaluation can put them in SQL.
    filter_host: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Host", related_name="alert_rules", null=True, on_delete=fields.SET_NULL
    )
    filter_search = fields.CharField(max_length=256, null=True)
    filter_source = fields.CharField(max_length=16, null=True)
    include_ca = fields.BooleanField(default=False)
    enabled = fields.BooleanField(default=True)
    # Set on the rules created on a new database ("expiry-30", ...): unique, so
    # every process may ensure them at start-up and none is ever created twice
    # (a deleted default rule keeps its row, so it does not come back).
    default_key = fields.CharField(max_length=32, null=True, unique=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    # Deleted rules keep their row: their alerts still name them.
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "alert_rule"


class AlertRuleChannel(Model):
    """Which channels a rule notifies."""

    id = fields.IntField(primary_key=True)
    rule: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.AlertRule", related_name="channel_links", on_delete=fields.CASCADE
    )
    channel: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.NotificationChannel", related_name="rule_links", on_delete=fields.CASCADE
    )

    class Meta:
        table = "alert_rule_channel"
        unique_together = (("rule_id", "channel_id"),)


class Alert(Model):
    id = fields.IntField(primary_key=True)
    rule: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.AlertRule", related_name="alerts", on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(AlertRuleKind, max_length=16)
    certificate: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Certificate", related_name="alerts", null=True, on_delete=fields.CASCADE
    )
    tracked_source: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.TrackedSource", related_name="alerts", null=True, on_delete=fields.CASCADE
    )
    host: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Host", related_name="alerts", null=True, on_delete=fields.CASCADE
    )
    state = fields.CharEnumField(AlertState, max_length=16)
    severity = fields.CharEnumField(AlertSeverity, max_length=16)
    fired_at = fields.DatetimeField()
    acknowledged_at = fields.DatetimeField(null=True)
    acknowledged_until = fields.DatetimeField(null=True)
    acknowledged_by = fields.CharField(max_length=255, null=True)
    resolved_at = fields.DatetimeField(null=True)
    resolution = fields.CharEnumField(AlertResolution, max_length=24, null=True)
    open_key = fields.CharField(max_length=160, null=True, unique=True)

    class Meta:
        table = "alert"
        indexes = (
            Index(fields=("certificate_id", "state"), name="alert_certificate"),
            Index(fields=("host_id", "state"), name="alert_host"),
            Index(fields=("tracked_source_id", "state"), name="alert_source"),
            Index(fields=("state", "acknowledged_until"), name="alert_state"),
        )
