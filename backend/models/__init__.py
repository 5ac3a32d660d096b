"""Tortoise models, one module per aggregate.

All timestamps are aware UTC and set from :mod:`backend.clock` (never
``auto_now``: it reads the real clock).
"""

from backend.models.alert import (
    Alert,
    AlertResolution,
    AlertRule,
    AlertRuleChannel,
    AlertRuleKind,
    AlertSeverity,
    AlertState,
)
from backend.models.certificate import Certificate
from backend.models.enrollment import EnrollmentToken
from backend.models.event import CertificateEvent, EventType
from backend.models.heartbeat import Heartbeat
from backend.models.host import Host
from backend.models.location import CertificateLocation, LocationKind
from backend.models.notification import (
    ChannelKind,
    DeliveryKind,
    DeliveryStatus,
    NotificationChannel,
    NotificationDelivery,
)
from backend.models.scan import ScanPart
from backend.models.token import ApiToken, Role
from backend.models.tracked_source import RefreshInterval, SourceKind, TrackedSource

__all__ = [
    "Alert",
    "AlertResolution",
    "AlertRule",
    "AlertRuleChannel",
    "AlertRuleKind",
    "AlertSeverity",
    "AlertState",
    "ChannelKind",
    "DeliveryKind",
    "DeliveryStatus",
    "NotificationChannel",
    "NotificationDelivery",
    "ApiToken",
    "Certificate",
    "CertificateEvent",
    "CertificateLocation",
    "EnrollmentToken",
    "EventType",
    "Heartbeat",
    "Host",
    "LocationKind",
    "RefreshInterval",
    "Role",
    "ScanPart",
    "SourceKind",
    "TrackedSource",
]
