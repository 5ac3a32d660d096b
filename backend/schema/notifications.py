"""Notification channels (webhook, Slack, e-mail) and every delivery attempt.

Secrets never leave the server: a webhook says only ``secretSet``, a Slack
channel ``webhookUrlSet``; a generated webhook secret is shown once, in
``createNotificationChannel``'s payload.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Union

import strawberry

from backend.models import ChannelKind as ChannelKindEnum
from backend.models import DeliveryKind as DeliveryKindEnum
from backend.models import DeliveryStatus as DeliveryStatusEnum
from backend.models import NotificationChannel as ChannelModel
from backend.models import NotificationDelivery as DeliveryModel
from backend.schema.core.access import EDIT, READ, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, decode_id, from_global_id, to_global_id
from backend.services import channels as channel_service
from backend.services import notify

if TYPE_CHECKING:
    from backend.schema.alerts import Alert

NotificationChannelKind = strawberry.enum(ChannelKindEnum, name="NotificationChannelKind")
NotificationDeliveryKind = strawberry.enum(DeliveryKindEnum, name="NotificationDeliveryKind")
NotificationDeliveryStatus = strawberry.enum(DeliveryStatusEnum, name="NotificationDeliveryStatus")


@access(READ)
@strawberry.type
class WebhookConfig:
    url: str
    secret_set: bool = strawberry.field(description="The signing secret is stored (encrypted); it is never shown.")


@access(READ)
@strawberry.type
class SlackConfig:
    webhook_url_set: bool = strawberry.field(description="The incoming-webhook URL is stored (encrypted); never shown.")


@access(READ)
@strawberry.type
class EmailConfig:
    to: list[str]


NotificationChannelConfig = Annotated[
    Union[WebhookConfig, SlackConfig, EmailConfig], strawberry.union("NotificationChannelConfig")
]


@access(READ)
@strawberry.type
class NotificationChannel(Node):
    name: str
    kind: NotificationChannelKind
    enabled: bool
    config: NotificationChannelConfig
    created_at: dt.datetime
    updated_at: dt.datetime
    last_delivery_at: dt.datetime | None = strawberry.field(description="The last attempt that was SENT.")
    deleted_at: dt.datetime | None
    _pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: ChannelModel | None) -> NotificationChannel | None:
        if m is None:
            return None
        kind = ChannelKindEnum(m.kind)
        config_data = m.config or {}
        if kind is ChannelKindEnum.WEBHOOK:
            config = WebhookConfig(url=config_data.get("url", ""), secret_set=bool(m.secret_encrypted))
        elif kind is ChannelKindEnum.SLACK:
            config = SlackConfig(webhook_url_set=bool(m.secret_encrypted))
        else:
            config = EmailConfig(to=list(config_data.get("to") or []))
        return cls(
            id=to_global_id("NotificationChannel", m.id), name=m.name, kind=kind, enabled=m.enabled, config=config,
            created_at=m.created_at, updated_at=m.updated_at, last_delivery_at=m.last_delivery_at,
            deleted_at=m.deleted_at, _pk=m.id,
        )  # fmt: skip


@access(READ)
@strawberry.type(description="One attempt to notify a channel. Failed attempts are retried as new rows (5 in all).")
class NotificationDelivery(Node):
    kind: NotificationDeliveryKind
    attempt: int = strawberry.field(description="1 to 5.")
    first_attempt_id: strawberry.ID = strawberry.field(
        description="The first attempt of this notification (itself on attempt 1): sent as X-CTOps-Delivery."
    )
    status: NotificationDeliveryStatus
    response_code: int | None = strawberry.field(description="HTTP status (webhook, Slack) or 250 (e-mail accepted).")
    error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    next_attempt_at: dt.datetime | None = strawberry.field(description="PENDING attempts: when it is due.")
    _channel_id: strawberry.Private[int]
    _alert_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: DeliveryModel | None) -> NotificationDelivery | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("NotificationDelivery", m.id), kind=DeliveryKindEnum(m.kind), attempt=m.attempt,
            first_attempt_id=to_global_id("NotificationDelivery", m.first_attempt_id or m.id),
            status=DeliveryStatusEnum(m.status), response_code=m.response_code, error=m.error, created_at=m.created_at,
            sent_at=m.sent_at, next_attempt_at=m.next_attempt_at, _channel_id=m.channel_id, _alert_id=m.alert_id,
        )  # fmt: skip

    @strawberry.field
    async def channel(self, info: Info) -> NotificationChannel:
        from backend.schema.alerts import alert_loaders

        return NotificationChannel.from_model(await alert_loaders(info).channel.load(self._channel_id))

    @strawberry.field(description="Null for TEST deliveries.")
    async def alert(self, info: Info) -> Annotated[Alert, strawberry.lazy("backend.schema.alerts")] | None:
        from backend.schema.alerts import Alert, alert_loaders

        if self._alert_id is None:
            return None
        return Alert.from_model(await alert_loaders(info).alert.load(self._alert_id))


@strawberry.input
class NotificationDeliveryFilter:
    channel_id: strawberry.ID | None = None
    alert_id: strawberry.ID | None = None
    statuses: list[NotificationDeliveryStatus] | None = None


@access(READ)
@strawberry.type
class NotificationQueries:
    @strawberry.field(description="Channels, oldest first (deleted ones are left out).")
    async def notification_channels(self) -> list[NotificationChannel]:
        return [NotificationChannel.from_model(c) for c in await channel_service.list_channels()]

    @strawberry.field(description="One channel; null when nothing matches.")
    async def notification_channel(self, id: strawberry.ID) -> NotificationChannel | None:
        type_name, pk = from_global_id(id)
        if type_name != "NotificationChannel":
            return None
        return NotificationChannel.from_model(await channel_service.get_channel(pk))

    @strawberry.field(description="Every delivery attempt, newest first.")
    async def notification_deliveries(
        self, first: int | None = None, after: str | None = None, filter: NotificationDeliveryFilter | None = None
    ) -> Connection[NotificationDelivery]:
        f = filter or NotificationDeliveryFilter()
        query = notify.DeliveryQuery(
            channel_id=decode_id(f.channel_id, "NotificationChannel"),
            alert_id=decode_id(f.alert_id, "Alert"),
            statuses=tuple(DeliveryStatusEnum(s) for s in f.statuses) if f.statuses else None,
        )
        page = await notify.list_deliveries(query, first, after)
        return Connection[NotificationDelivery].from_page(
            page, NotificationDelivery.from_model, lambda: notify.deliveries_queryset(query).count()
        )


@strawberry.input
class WebhookConfigInput:
    url: str = strawberry.field(description="http:// or https://; receives a signed POST per notification.")
    secret: str | None = strawberry.field(
        default=None,
        description="HMAC-SHA256 signing secret (16 to 1024 characters). Left out on create: one is generated and "
        "returned once; left out on update: the stored one is kept.",
    )


@strawberry.input
class SlackConfigInput:
    webhook_url: str = strawberry.field(description="The Slack incoming-webhook URL (https; stored encrypted).")


@strawberry.input
class EmailConfigInput:
    to: list[str]


@strawberry.input
class CreateNotificationChannelInput:
    name: str
    kind: NotificationChannelKind
    webhook: WebhookConfigInput | None = None
    slack: SlackConfigInput | None = None
    email: EmailConfigInput | None = None
    enabled: bool = True


@strawberry.input
class UpdateNotificationChannelInput:
    name: str | None = None
    enabled: bool | None = None
    webhook: WebhookConfigInput | None = None
    slack: SlackConfigInput | None = None
    email: EmailConfigInput | None = None


@access(EDIT)
@strawberry.type
class CreateNotificationChannelPayload:
    channel: NotificationChannel
    generated_secret: str | None = strawberry.field(
        description="The webhook secret generated because none was given: shown here once, never again."
    )


def _webhook(value: WebhookConfigInput | None) -> channel_service.WebhookInput | None:
    return None if value is None else channel_service.WebhookInput(value.url, value.secret)


def _slack(value: SlackConfigInput | None) -> channel_service.SlackInput | None:
    return None if value is None else channel_service.SlackInput(value.webhook_url)


def _email(value: EmailConfigInput | None) -> channel_service.EmailInput | None:
    return None if value is None else channel_service.EmailInput(tuple(value.to))


@access(EDIT)
@strawberry.type
class NotificationMutations:
    @strawberry.mutation
    async def create_notification_channel(self, info: Info, input: CreateNotificationChannelInput) -> CreateNotificationChannelPayload:
        created = await channel_service.create_channel(
            input.name, ChannelKindEnum(input.kind), webhook=_webhook(input.webhook), slack=_slack(input.slack),
            email=_email(input.email), enabled=input.enabled, settings=info.context.settings,
        )  # fmt: skip
        return CreateNotificationChannelPayload(
            channel=NotificationChannel.from_model(created.channel), generated_secret=created.generated_secret
        )

    @strawberry.mutation
    async def update_notification_channel(
        self, info: Info, id: strawberry.ID, input: UpdateNotificationChannelInput
    ) -> NotificationChannel:
        channel = await channel_service.update_channel(
            from_global_id(id, "NotificationChannel")[1], name=input.name, enabled=input.enabled,
            webhook=_webhook(input.webhook), slack=_slack(input.slack), email=_email(input.email),
            settings=info.context.settings,
        )  # fmt: skip
        return NotificationChannel.from_model(channel)

    @strawberry.mutation(description="Rules stop notifying it; pending retries are given up; history is kept.")
    async def delete_notification_channel(self, id: strawberry.ID) -> bool:
        return await channel_service.delete_channel(from_global_id(id, "NotificationChannel")[1])

    @strawberry.mutation(description="Send a TEST notification now (waits up to 10 s): SENT or FAILED, never retried.")
    async def test_notification_channel(self, info: Info, id: strawberry.ID) -> NotificationDelivery:
        delivery = await notify.send_test(from_global_id(id, "NotificationChannel")[1], settings=info.context.settings)
        return NotificationDelivery.from_model(delivery)
