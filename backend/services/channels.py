"""Notification channels: webhooks, Slack incoming webhooks, e-mail.

Secrets (a webhook's signing secret, a Slack URL) are encrypted before they
are stored (:mod:`backend.secret_box`) and never returned: the API says only
whether one is set. A webhook created without a secret gets a generated one,
returned once by :func:`create_channel`.
"""

from __future__ import annotations

import dataclasses
import re
import secrets as random_secrets
from typing import Any

from backend import clock, http_client, mail, secret_box
from backend.db import transaction
from backend.errors import BadUserInput, NotFound
from backend.models import AlertRuleChannel, ChannelKind, DeliveryStatus, NotificationChannel, NotificationDelivery

MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 1024
MAX_RECIPIENTS = 50
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")


@dataclasses.dataclass(frozen=True)
class WebhookInput:
    url: str
    secret: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class SlackInput:
    webhook_url: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class EmailInput:
    to: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Created:
    channel: NotificationChannel
    generated_secret: str | None = dataclasses.field(default=None, repr=False)


def _name(name: str | None) -> str:
    text = (name or "").strip()
    if not text or len(text) > 255:
        raise BadUserInput("A channel needs a name of 1 to 255 characters.")
    return text


def _webhook_url(url: str) -> str:
    try:
        target = http_client.parse(url)
    except ValueError as exc:
        raise BadUserInput(f"webhook.url: {exc}.") from None
    if len(url) > 2048:
        raise BadUserInput("webhook.url is longer than 2048 characters.")
    return f"{target.scheme}://{target.host_header}{target.path}"


def _slack_url(url: str) -> str:
    try:
        http_client.parse(url, https_only=True)
    except ValueError as exc:
        raise BadUserInput(f"slack.webhookUrl: {exc}.") from None
    if len(url) > 2048:
        raise BadUserInput("slack.webhookUrl is longer than 2048 characters.")
    return url.strip()


def _recipients(to: tuple[str, ...] | list[str], settings: object) -> list[str]:
    addresses = list(dict.fromkeys(a.strip() for a in to if a and a.strip()))
    if not addresses:
        raise BadUserInput("email.to needs at least one address.")
    if len(addresses) > MAX_RECIPIENTS:
        raise BadUserInput(f"email.to holds at most {MAX_RECIPIENTS} addresses.")
    bad = [a for a in addresses if not _EMAIL.match(a) or len(a) > 254]
    if bad:
        raise BadUserInput(f"email.to: not an e-mail address: {bad[0]!r}.")
    if not getattr(settings, "smtp_url", None):
        raise BadUserInput("E-mail channels need CTOPS_SMTP_URL (the SMTP server to send through).")
    return addresses


def _secret(secret: str | None) -> tuple[str, str | None]:
    """(the secret to store, the generated one to show once, if any)."""
    if secret is None or secret == "":
        generated = random_secrets.token_urlsafe(32)
        return generated, generated
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise BadUserInput(
            f"webhook.secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters (leave it out to have one generated)."
        )
    return secret, None


def _one_config(kind: ChannelKind, webhook: Any, slack: Any, email: Any, *, required: bool) -> Any:
    given = {ChannelKind.WEBHOOK: webhook, ChannelKind.SLACK: slack, ChannelKind.EMAIL: email}
    others = [k.value.lower() for k, v in given.items() if v is not None and k is not kind]
    if others:
        raise BadUserInput(f"A {kind.value} channel takes `{kind.value.lower()}` settings only, not `{others[0]}`.")
    if required and given[kind] is None:
        raise BadUserInput(f"A {kind.value} channel needs `{kind.value.lower()}` settings.")
    return given[kind]


async def create_channel(
    name: str,
    kind: ChannelKind,
    *,
    webhook: WebhookInput | None = None,
    slack: SlackInput | None = None,
    email: EmailInput | None = None,
    enabled: bool = True,
    settings: object,
) -> Created:
    kind = ChannelKind(kind)
    name = _name(name)
    config: dict[str, Any] = {}
    secret: str | None = None
    generated: str | None = None
    given = _one_config(kind, webhook, slack, email, required=True)
    if kind is ChannelKind.WEBHOOK:
        config["url"] = _webhook_url(given.url)
        secret, generated = _secret(given.secret)
    elif kind is ChannelKind.SLACK:
        secret = _slack_url(given.webhook_url)
    else:
        config["to"] = _recipients(given.to, settings)
    encrypted = secret_box.encrypt(settings, secret) if secret is not None else None
    now = clock.now()
    channel = await NotificationChannel.create(
        name=name, kind=kind, enabled=enabled, config=config, secret_encrypted=encrypted, created_at=now, updated_at=now
    )
    return Created(channel, generated)


async def update_channel(
    channel_id: int,
    *,
    name: str | None = None,
    enabled: bool | None = None,
    webhook: WebhookInput | None = None,
    slack: SlackInput | None = None,
    email: EmailInput | None = None,
    settings: object,
) -> NotificationChannel:
    """Change what is given. A webhook's secret is kept unless a new one is given."""
    channel = await NotificationChannel.get_or_none(id=channel_id, deleted_at__isnull=True)
    if channel is None:
        raise NotFound("No notification channel with this id.")
    kind = ChannelKind(channel.kind)
    given = _one_config(kind, webhook, slack, email, required=False)
    config = dict(channel.config or {})
    if name is not None:
        channel.name = _name(name)
    if enabled is not None:
        channel.enabled = enabled
    if given is not None:
        if kind is ChannelKind.WEBHOOK:
            config["url"] = _webhook_url(given.url)
            if given.secret:
                channel.secret_encrypted = secret_box.encrypt(settings, _secret(given.secret)[0])
        elif kind is ChannelKind.SLACK:
            channel.secret_encrypted = secret_box.encrypt(settings, _slack_url(given.webhook_url))
        else:
            config["to"] = _recipients(given.to, settings)
    channel.config = config
    channel.updated_at = clock.now()
    await channel.save()
    return channel


async def delete_channel(channel_id: int) -> bool:
    """Delete a channel: rules stop notifying it, its pending retries are given up
    (FAILED), its delivery history is kept."""
    now = clock.now()
    async with transaction():
        updated = await NotificationChannel.filter(id=channel_id, deleted_at__isnull=True).update(
            deleted_at=now, enabled=False, updated_at=now
        )
        if not updated:
            raise NotFound("No notification channel with this id.")
        await AlertRuleChannel.filter(channel_id=channel_id).delete()
        await NotificationDelivery.filter(channel_id=channel_id, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, error="The channel was deleted.", next_attempt_at=None
        )
    return True


async def list_channels() -> list[NotificationChannel]:
    return await NotificationChannel.filter(deleted_at__isnull=True).order_by("id")


async def get_channel(channel_id: int) -> NotificationChannel | None:
    return await NotificationChannel.get_or_none(id=channel_id)


def secret_of(channel: NotificationChannel, settings: object) -> str | None:
    """The decrypted secret (webhook signing secret, Slack URL): for sending only."""
    if not channel.secret_encrypted:
        return None
    return secret_box.decrypt(settings, channel.secret_encrypted)


def validate_email_settings(settings: object) -> None:
    mail.validate_settings(settings)
