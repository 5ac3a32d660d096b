"""Alert rules, alerts, acknowledging them, and ``alertEvents`` as they happen."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import itertools
import logging
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader

from backend import sql
from backend.models import Alert as AlertModel
from backend.models import AlertResolution as AlertResolutionEnum
from backend.models import AlertRule as RuleModel
from backend.models import AlertRuleChannel
from backend.models import AlertRuleKind as AlertRuleKindEnum
from backend.models import AlertSeverity as AlertSeverityEnum
from backend.models import AlertState as AlertStateEnum
from backend.models import NotificationChannel as ChannelModel
from backend.models import NotificationDelivery as DeliveryModel
from backend.schema.certificates import Certificate, CertificateSource
from backend.schema.core import live
from backend.schema.core.access import EDIT, READ, access
from backend.schema.core.context import Info
from backend.schema.core.execution import Delivery
from backend.schema.core.relay import Connection, Node, decode_id, from_global_id, to_global_id
from backend.schema.hosts import Host
from backend.schema.notifications import NotificationChannel, NotificationDelivery
from backend.schema.tracked_sources import TrackedSource
from backend.services import alerts as alert_service
from backend.services import inventory
from backend.services.pagination import check_first

log = logging.getLogger("ctops.live")

AlertSeverity = strawberry.enum(AlertSeverityEnum)
AlertState = strawberry.enum(AlertStateEnum)
AlertRuleKind = strawberry.enum(AlertRuleKindEnum)
AlertResolution = strawberry.enum(AlertResolutionEnum)


@strawberry.enum
class AlertChange(str, enum.Enum):
    FIRED = "FIRED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


# --- loaders (per request / per event batch, kept on the context's Loaders) -------------------


async def _by_ids(model: Any, ids: list[int]) -> list[Any]:
    rows = {r.id: r for r in await model.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def _rule_channels(rule_ids: list[int]) -> list[list[ChannelModel]]:
    links = await AlertRuleChannel.filter(rule_id__in=rule_ids).order_by("channel_id").values("rule_id", "channel_id")
    channel_ids = sorted({link["channel_id"] for link in links})
    channels = {c.id: c for c in await ChannelModel.filter(id__in=channel_ids, deleted_at__isnull=True)}
    grouped: dict[int, list[ChannelModel]] = defaultdict(list)
    for link in links:
        if link["channel_id"] in channels:
            grouped[link["rule_id"]].append(channels[link["channel_id"]])
    return [grouped.get(i, []) for i in rule_ids]


async def _deliveries(alert_ids: list[int]) -> list[list[DeliveryModel]]:
    grouped: dict[int, list[DeliveryModel]] = defaultdict(list)
    for row in await DeliveryModel.filter(alert_id__in=alert_ids).order_by("id"):
        grouped[row.alert_id].append(row)
    return [grouped.get(i, []) for i in alert_ids]


async def _alert_host_ids(alert_ids: list[int]) -> list[list[int]]:
    """The hosts an alert is about: a HOST_STALE alert's host; for a certificate,
    the hosts holding it (while open) or that held it during the alert (resolved)."""
    rows = await sql.fetch(
        "SELECT DISTINCT a.id AS alert_id, l.host_id FROM alert a"
        " JOIN certificate_location l ON l.certificate_id = a.certificate_id"
        f" WHERE a.id IN {sql.in_list(alert_ids)}"
        " AND (l.removed_at IS NULL OR (a.resolved_at IS NOT NULL AND l.removed_at >= a.fired_at))"
        f" UNION SELECT a.id AS alert_id, a.host_id FROM alert a WHERE a.id IN {sql.in_list(alert_ids)}"
        " AND a.host_id IS NOT NULL",
        [*alert_ids, *alert_ids],
    )
    grouped: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        grouped[r["alert_id"]].append(r["host_id"])
    return [sorted(grouped.get(i, [])) for i in alert_ids]


class AlertLoaders:
    def __init__(self) -> None:
        self.rule = DataLoader(load_fn=lambda ids: _by_ids(RuleModel, ids))
        self.alert = DataLoader(load_fn=lambda ids: _by_ids(AlertModel, ids))
        self.channel = DataLoader(load_fn=lambda ids: _by_ids(ChannelModel, ids))
        self.rule_channels = DataLoader(load_fn=_rule_channels)
        self.deliveries = DataLoader(load_fn=_deliveries)
        self.host_ids = DataLoader(load_fn=_alert_host_ids)


def alert_loaders(info: Info) -> AlertLoaders:
    """This request's (or event batch's) alert loaders, made when first used."""
    loaders = info.context.loaders
    found = getattr(loaders, "_ctops_alerts", None)
    if found is None:
        found = AlertLoaders()
        loaders._ctops_alerts = found  # type: ignore[attr-defined]
    return found


# --- rules -------------------------------------------------------------------------------------


@access(READ)
@strawberry.type
class AlertRuleFilter:
    host_id: strawberry.ID | None
    search: str | None
    source: CertificateSource | None


@access(READ)
@strawberry.type
class AlertRule(Node):
    name: str
    kind: AlertRuleKind
    threshold_days: int | None = strawberry.field(description="EXPIRY: fires when notAfter <= now + thresholdDays x 24 h.")
    failing_for_hours: int | None = strawberry.field(description="SOURCE_FAILING: fires after failing this long.")
    severity: AlertSeverity
    filter: AlertRuleFilter
    include_ca: bool = strawberry.field(description="EXPIRY: CA certificates (isCa) are left out unless this is true.")
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None
    _pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: RuleModel | None) -> AlertRule | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("AlertRule", m.id), name=m.name, kind=AlertRuleKindEnum(m.kind),
            threshold_days=m.threshold_days, failing_for_hours=m.failing_for_hours,
            severity=AlertSeverityEnum(m.severity),
            filter=AlertRuleFilter(
                host_id=to_global_id("Host", m.filter_host_id) if m.filter_host_id else None,
                search=m.filter_search,
                source=inventory.CertificateSource(m.filter_source) if m.filter_source else None,
            ),
            include_ca=m.include_ca, enabled=m.enabled, created_at=m.created_at, updated_at=m.updated_at,
            deleted_at=m.deleted_at, _pk=m.id,
        )  # fmt: skip

    @strawberry.field(description="The channels notified on each state change of its alerts.")
    async def channels(self, info: Info) -> list[NotificationChannel]:
        return [NotificationChannel.from_model(c) for c in await alert_loaders(info).rule_channels.load(self._pk)]


# --- alerts -------------------------------------------------------------------------------------


@access(READ)
@strawberry.type
class Alert(Node):
    kind: AlertRuleKind
    state: AlertState
    severity: AlertSeverity = strawberry.field(description="The rule's, whatever the certificate's status.")
    fired_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_until: dt.datetime | None = strawberry.field(
        description="Null while acknowledged means until resolved. Once it passes the alert fires again."
    )
    acknowledged_by: str | None
    resolved_at: dt.datetime | None
    resolution: AlertResolution | None
    _model: strawberry.Private[AlertModel]

    @classmethod
    def from_model(cls, m: AlertModel | None) -> Alert | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("Alert", m.id), kind=AlertRuleKindEnum(m.kind), state=AlertStateEnum(m.state),
            severity=AlertSeverityEnum(m.severity), fired_at=m.fired_at, acknowledged_at=m.acknowledged_at,
            acknowledged_until=m.acknowledged_until, acknowledged_by=m.acknowledged_by, resolved_at=m.resolved_at,
            resolution=AlertResolutionEnum(m.resolution) if m.resolution else None, _model=m,
        )  # fmt: skip

    @strawberry.field
    async def rule(self, info: Info) -> AlertRule:
        return AlertRule.from_model(await alert_loaders(info).rule.load(self._model.rule_id))

    @strawberry.field(description="EXPIRY alerts: the certificate.")
    async def certificate(self, info: Info) -> Certificate | None:
        if self._model.certificate_id is None:
            return None
        return Certificate.from_model(await info.context.loaders.certificate.load(self._model.certificate_id))

    @strawberry.field(description="SOURCE_FAILING alerts: the tracked URL.")
    async def tracked_source(self, info: Info) -> TrackedSource | None:
        if self._model.tracked_source_id is None:
            return None
        return TrackedSource.from_model(await info.context.loaders.tracked_source.load(self._model.tracked_source_id))

    @strawberry.field(description="HOST_STALE alerts: the silent host.")
    async def host(self, info: Info) -> Host | None:
        if self._model.host_id is None:
            return None
        return Host.from_model(await info.context.loaders.host.load(self._model.host_id))

    @strawberry.field(
        description="The hosts it is about: those holding the certificate (while open; once resolved, those that "
        "held it during the alert), or the silent host. Bounded."
    )
    async def hosts(self, info: Info, first: int = 100) -> list[Host]:
        first = check_first(first)
        ids = (await alert_loaders(info).host_ids.load(self._model.id))[:first]
        return [Host.from_model(h) for h in await info.context.loaders.host.load_many(ids) if h is not None]

    @strawberry.field
    async def host_count(self, info: Info) -> int:
        return len(await alert_loaders(info).host_ids.load(self._model.id))

    @strawberry.field(description="Every notification attempt for it, oldest first.")
    async def deliveries(self, info: Info) -> list[NotificationDelivery]:
        return [NotificationDelivery.from_model(d) for d in await alert_loaders(info).deliveries.load(self._model.id)]


@strawberry.input
class AlertFilter:
    states: list[AlertState] | None = None
    severities: list[AlertSeverity] | None = None
    kinds: list[AlertRuleKind] | None = None
    certificate_id: strawberry.ID | None = None


@access(READ)
@strawberry.type
class AlertQueries:
    @strawberry.field(description="Alert rules (deleted ones left out), oldest first.")
    async def alert_rules(self) -> list[AlertRule]:
        return [AlertRule.from_model(r) for r in await alert_service.list_rules()]

    @strawberry.field(description="One rule (deleted ones too: their alerts still name them); null when nothing matches.")
    async def alert_rule(self, id: strawberry.ID) -> AlertRule | None:
        type_name, pk = from_global_id(id)
        return AlertRule.from_model(await alert_service.get_rule(pk)) if type_name == "AlertRule" else None

    @strawberry.field(description="Alerts, newest first.")
    async def alerts(self, first: int | None = None, after: str | None = None, filter: AlertFilter | None = None) -> Connection[Alert]:
        f = filter or AlertFilter()
        query = alert_service.AlertQuery(
            states=tuple(AlertStateEnum(s) for s in f.states) if f.states else None,
            severities=tuple(AlertSeverityEnum(s) for s in f.severities) if f.severities else None,
            kinds=tuple(AlertRuleKindEnum(k) for k in f.kinds) if f.kinds else None,
            certificate_id=decode_id(f.certificate_id, "Certificate"),
        )
        page = await alert_service.list_alerts(query, first, after)
        return Connection[Alert].from_page(page, Alert.from_model, lambda: alert_service.alerts_queryset(query).count())

    @strawberry.field(description="One alert; null when nothing matches.")
    async def alert(self, id: strawberry.ID) -> Alert | None:
        type_name, pk = from_global_id(id)
        return Alert.from_model(await alert_service.get_alert(pk)) if type_name == "Alert" else None


# --- mutations -----------------------------------------------------------------------------------


@strawberry.input
class AlertRuleFilterInput:
    host_id: strawberry.ID | None = strawberry.field(default=None, description="EXPIRY, HOST_STALE: on this host.")
    search: str | None = strawberry.field(
        default=None, description="EXPIRY: CN, SANs, subject, issuer; SOURCE_FAILING: URL or name; HOST_STALE: hostname."
    )
    source: CertificateSource | None = strawberry.field(default=None, description="EXPIRY: AGENT or IMPORTED.")


@strawberry.input
class CreateAlertRuleInput:
    name: str
    kind: AlertRuleKind = AlertRuleKindEnum.EXPIRY
    threshold_days: int | None = strawberry.field(default=None, description="Required for EXPIRY.")
    failing_for_hours: int | None = strawberry.field(default=None, description="SOURCE_FAILING (default 24).")
    severity: AlertSeverity = AlertSeverityEnum.WARNING
    filter: AlertRuleFilterInput | None = None
    include_ca: bool = False
    channel_ids: list[strawberry.ID] | None = None
    enabled: bool = True


@strawberry.input
class UpdateAlertRuleInput:
    name: str | None = strawberry.UNSET
    threshold_days: int | None = strawberry.UNSET
    failing_for_hours: int | None = strawberry.UNSET
    severity: AlertSeverity | None = strawberry.UNSET
    filter: AlertRuleFilterInput | None = strawberry.field(default=strawberry.UNSET, description="Replaces the filter.")
    include_ca: bool | None = strawberry.UNSET
    channel_ids: list[strawberry.ID] | None = strawberry.field(default=strawberry.UNSET, description="Replaces the list.")
    enabled: bool | None = strawberry.UNSET


def _rule_filter(value: AlertRuleFilterInput | None) -> alert_service.RuleFilter:
    if value is None:
        return alert_service.RuleFilter()
    return alert_service.RuleFilter(
        host_id=decode_id(value.host_id, "Host"),
        search=value.search,
        source=inventory.CertificateSource(value.source) if value.source else None,
    )


def _channel_ids(ids: list[strawberry.ID] | None) -> tuple[int, ...]:
    return tuple(from_global_id(i, "NotificationChannel")[1] for i in ids or ())


def _given(value: Any) -> bool:
    return value is not strawberry.UNSET


@access(EDIT)
@strawberry.type
class AlertMutations:
    @strawberry.mutation(description="Create a rule; what it matches fires at once.")
    async def create_alert_rule(self, input: CreateAlertRuleInput) -> AlertRule:
        rule = await alert_service.create_rule(alert_service.RuleInput(
            name=input.name, kind=AlertRuleKindEnum(input.kind), threshold_days=input.threshold_days,
            failing_for_hours=input.failing_for_hours, severity=AlertSeverityEnum(input.severity),
            filter=_rule_filter(input.filter), include_ca=input.include_ca, channel_ids=_channel_ids(input.channel_ids),
            enabled=input.enabled,
        ))  # fmt: skip
        return AlertRule.from_model(rule)

    @strawberry.mutation(description="Change the given fields; alerts it no longer matches resolve NO_LONGER_MATCHES.")
    async def update_alert_rule(self, id: strawberry.ID, input: UpdateAlertRuleInput) -> AlertRule:
        changes: dict[str, Any] = {}
        for name in ("name", "threshold_days", "failing_for_hours", "include_ca", "enabled"):
            value = getattr(input, name)
            if _given(value):
                if value is None and name in ("name", "include_ca", "enabled"):
                    from backend.errors import BadUserInput

                    raise BadUserInput(f"{name} cannot be null.")
                changes[name] = value
        if _given(input.severity):
            if input.severity is None:
                from backend.errors import BadUserInput

                raise BadUserInput("severity cannot be null.")
            changes["severity"] = AlertSeverityEnum(input.severity)
        if _given(input.filter):
            changes["filter"] = _rule_filter(input.filter)
        if _given(input.channel_ids):
            changes["channel_ids"] = _channel_ids(input.channel_ids)
        rule = await alert_service.update_rule(from_global_id(id, "AlertRule")[1], **changes)
        return AlertRule.from_model(rule)

    @strawberry.mutation(description="Delete a rule: its open alerts resolve RULE_DELETED (and notify).")
    async def delete_alert_rule(self, id: strawberry.ID) -> bool:
        return await alert_service.delete_rule(from_global_id(id, "AlertRule")[1])

    @strawberry.mutation(
        description="Acknowledge: no more notifications until `until` passes (then it fires again), or until it "
        "resolves when `until` is left out. A more severe rule firing for the same certificate still notifies."
    )
    async def acknowledge_alert(self, info: Info, id: strawberry.ID, until: dt.datetime | None = None) -> Alert:
        alert = await alert_service.acknowledge(
            from_global_id(id, "Alert")[1], until=until, actor=info.context.require_viewer().actor
        )
        return Alert.from_model(alert)


# --- live ----------------------------------------------------------------------------------------


@access(READ)
@strawberry.type
class AlertEvent:
    change: AlertChange
    _alert: strawberry.Private[AlertModel]

    @strawberry.field
    def alert(self) -> Alert:
        return Alert.from_model(self._alert)


@strawberry.input
class AlertEventFilter:
    severities: list[AlertSeverity] | None = None


class AlertFeed:
    """One per API process: ``alerts`` bus messages to ``alertEvents`` subscriptions.

    Each message's alerts are loaded once (one query) and shared, with one set
    of loaders, by every subscriber; subscriptions use their connection's
    bounded queue (a slow consumer is closed with 1013, as for the other
    subscriptions). Alert events are live only: after a reconnect, re-query
    ``alerts``.
    """

    INBOX_LIMIT = 10_000

    def __init__(self) -> None:
        self.subscriptions: set[live.Subscription] = set()
        self._inbox: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=self.INBOX_LIMIT)
        self._task: asyncio.Task | None = None
        self._keys = itertools.count(1)

    def attach(self, bus: Any) -> None:
        bus.add_listener(self.on_message)

    def on_message(self, topic: str, payload: dict) -> None:
        if topic != alert_service.TOPIC:
            return
        changes = [c for c in payload.get("changes") or () if isinstance(c, dict) and "id" in c]
        if not changes or not self.subscriptions:
            return
        try:
            self._inbox.put_nowait(changes)
        except asyncio.QueueFull:
            log.error("Alert feed inbox full: closing alertEvents connections")
            for subscription in list(self.subscriptions):
                subscription.connection.close(*live.SLOW_CONSUMER)

    def subscribe(self, connection: live.LiveConnection, accepts: Any) -> live.Subscription:
        subscription = live.Subscription(self, connection, accepts)  # type: ignore[arg-type]
        if connection.closed:
            subscription.stop()
            return subscription
        connection.subscriptions.add(subscription)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: live.Subscription) -> None:
        subscription.stop()
        subscription.connection.subscriptions.discard(subscription)
        self.subscriptions.discard(subscription)

    async def _deliver(self, changes: list[dict]) -> None:
        self.subscriptions = {s for s in self.subscriptions if not s.stopped}
        if not self.subscriptions:
            return
        rows = {a.id: a for a in await AlertModel.filter(id__in=sorted({int(c["id"]) for c in changes}))}
        batch = live.Batch([])
        for change in changes:
            alert = rows.get(int(change["id"]))
            if alert is None:
                continue
            key = ("alert", next(self._keys))
            item = Delivery(AlertEvent(change=AlertChange(change["change"]), _alert=alert), batch.loaders, batch.shared, key)
            for subscription in list(self.subscriptions):
                try:
                    accepted = subscription.accepts(alert)
                except Exception:
                    log.exception("alertEvents filter failed")
                    accepted = False
                if accepted:
                    subscription.offer(item, batch)  # type: ignore[arg-type]

    async def _run(self) -> None:
        while True:
            changes = await self._inbox.get()
            try:
                await self._deliver(changes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Alert feed could not deliver %d changes", len(changes))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ctops:alert-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


@access(READ)
@strawberry.type
class AlertSubscriptions:
    @strawberry.subscription(description="Alerts as they fire, are acknowledged and resolve (live only).")
    async def alert_events(
        self, info: Info, filter: AlertEventFilter | None = None
    ) -> AsyncGenerator[AlertEvent, None]:
        feed, connection = live.for_subscription(info.context)
        if getattr(feed, "alerts", None) is None:
            from backend.errors import BadUserInput

            raise BadUserInput("alertEvents is not served by this process.")
        severities = {AlertSeverityEnum(s).value for s in (filter.severities if filter and filter.severities else ())}
        return _alert_stream(feed.alerts, connection, severities or None)


async def _alert_stream(feed: AlertFeed, connection: live.LiveConnection, severities: set[str] | None) -> AsyncIterator[Delivery]:
    def accepts(alert: AlertModel) -> bool:
        return severities is None or getattr(alert.severity, "value", alert.severity) in severities

    subscription = feed.subscribe(connection, accepts)
    try:
        while True:
            item = await subscription.next()
            if item is None:
                return
            yield item[0]
    finally:
        feed.unsubscribe(subscription)

