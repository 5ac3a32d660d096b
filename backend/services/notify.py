"""Sending notifications: every attempt is a ``NotificationDelivery`` row.

A state change of an alert queues one PENDING delivery per channel of its rule,
due now, in the transaction that changed the alert (``alerts.queue_deliveries``),
so a notification is never lost between the change and the send, and never
queued twice. A database-driven tick (:func:`tick`, every
``CTOPS_NOTIFY_TICK_SECONDS``: arq cron in ``ctops worker``, an asyncio loop in
embedded mode) sends what is due by the clock:

1. claim: due PENDING rows (``next_attempt_at <= now``), their
   ``next_attempt_at`` pushed :data:`LEASE` ahead in the same statement
   (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: one writer), so two
   workers never send the same attempt, and a claim whose process died comes
   due again after the lease;
2. send, outside any transaction, within ``CTOPS_NOTIFY_TIMEOUT_SECONDS``;
3. record: the row becomes SENT or FAILED (with the response code or error);
   a failed attempt schedules the next as a new PENDING row, 1 min, 5 min,
   30 min and 2 h after the previous attempt: five attempts in all.

Retries are rows with a time, not arq deferrals, so they survive restarts and
follow a moved clock. A test (:func:`send_test`) is one attempt, sent at once,
never retried.

Every attempt of one notification carries the first attempt's id in
``X-CTOps-Delivery`` (receivers drop duplicates on it) and sends the same body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

from backend import clock, http_client, mail, outbound
from backend.db import transaction
from backend.errors import CtopsError, NotFound
from backend.models import (
    ChannelKind,
    DeliveryKind,
    DeliveryStatus,
    NotificationChannel,
    NotificationDelivery,
)
from backend.services import bulk, channels
from backend.services import notification_messages as messages

log = logging.getLogger("ctops.notify")

BACKOFF = (dt.timedelta(minutes=1), dt.timedelta(minutes=5), dt.timedelta(minutes=30), dt.timedelta(hours=2))
MAX_ATTEMPTS = len(BACKOFF) + 1
LEASE = dt.timedelta(minutes=5)
CLAIM_BATCH = 100
MAX_BATCHES_PER_TICK = 20
CONCURRENCY = 20
TEST_TIMEOUT_SECONDS = 10.0
MAX_ERROR_CHARS = 1000


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    response_code: int | None = None
    error: str | None = None


# --- claiming ----------------------------------------------------------------------------------


async def claim_due(now: dt.datetime, limit: int = CLAIM_BATCH) -> list[int]:
    """Claim up to ``limit`` due PENDING deliveries (pushing them ``LEASE`` ahead)."""
    async with transaction() as conn:
        rows = await bulk.claim_due(
            conn, table="notification_delivery", due="next_attempt_at", where="status = ?",
            params=[DeliveryStatus.PENDING.value], now=now, lease_end=now + LEASE, limit=limit,
        )
    return [int(r["id"]) for r in rows]


async def tick(settings: object) -> int:
    """Send every delivery due now; returns how many attempts were made."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(delivery_id: int) -> None:
        async with limit:
            try:
                await deliver(delivery_id, settings=settings)
            except Exception:  # noqa: BLE001 - one delivery's bug must not stop the others
                log.exception("Delivery %s failed unexpectedly; it is claimed again after the lease", delivery_id)

    total = 0
    for _ in range(MAX_BATCHES_PER_TICK):
        claimed = await claim_due(clock.now())
        await asyncio.gather(*(one(i) for i in claimed))
        total += len(claimed)
        if len(claimed) < CLAIM_BATCH:
            break
    if total:
        log.info("notify tick: %d attempt(s)", total)
    return total


# --- one attempt ---------------------------------------------------------------------------------


async def deliver(delivery_id: int, *, settings: object, timeout: float | None = None, retry: bool = True) -> NotificationDelivery:
    """Make the attempt ``delivery_id`` (claimed, or a test) and record its outcome."""
    delivery = await NotificationDelivery.get(id=delivery_id)
    channel = await NotificationChannel.get(id=delivery.channel_id)
    payload = delivery.payload
    if payload is None:
        kind = DeliveryKind(delivery.kind)
        if kind is DeliveryKind.TEST or delivery.alert_id is None:
            payload = messages.test_payload(channel)
        else:
            payload = await messages.alert_payload(delivery.alert_id, kind.value)
    if channel.deleted_at is not None:
        outcome, retry = Outcome(False, error="The channel was deleted."), False
    elif not channel.enabled and DeliveryKind(delivery.kind) is not DeliveryKind.TEST:
        outcome, retry = Outcome(False, error="The channel is disabled."), False
    else:
        limit = float(timeout if timeout is not None else getattr(settings, "notify_timeout_seconds", 10.0))
        outcome = await send(channel, delivery, payload, settings=settings, timeout=limit)
    await _record(delivery, payload, outcome, retry=retry)
    return await NotificationDelivery.get(id=delivery_id)


async def _record(delivery: NotificationDelivery, payload: dict, outcome: Outcome, *, retry: bool) -> None:
    now = clock.now()
    status = DeliveryStatus.SENT if outcome.ok else DeliveryStatus.FAILED
    encode = NotificationDelivery._meta.fields_map["payload"].encoder
    async with transaction() as conn:
        done = await bulk.fetch(
            conn,
            "UPDATE notification_delivery SET status = ?, response_code = ?, error = ?, sent_at = ?,"
            " next_attempt_at = NULL, payload = ? WHERE id = ? AND status = ? RETURNING id",
            [status.value, outcome.response_code, (outcome.error or None) and outcome.error[:MAX_ERROR_CHARS],
             now if outcome.ok else None, encode(payload), delivery.id, DeliveryStatus.PENDING.value],
        )  # fmt: skip
        if not done:
            return  # recorded by another process already (a lease that ran out mid-send)
        if outcome.ok:
            await bulk.execute(conn, "UPDATE notification_channel SET last_delivery_at = ? WHERE id = ?", [now, delivery.channel_id])
        elif retry and delivery.attempt < MAX_ATTEMPTS:
            await bulk.execute(
                conn,
                "INSERT INTO notification_delivery (channel_id, alert_id, kind, attempt, first_attempt_id, status,"
                " payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [delivery.channel_id, delivery.alert_id, getattr(delivery.kind, "value", delivery.kind),
                 delivery.attempt + 1, delivery.first_attempt_id or delivery.id, DeliveryStatus.PENDING.value,
                 encode(payload), now, now + BACKOFF[delivery.attempt - 1]],
            )  # fmt: skip
    if not outcome.ok:
        final = not retry or delivery.attempt >= MAX_ATTEMPTS
        log.warning(
            "Notification %s (attempt %d) to channel %s failed: %s%s", delivery.first_attempt_id or delivery.id,
            delivery.attempt, delivery.channel_id, outcome.error, " (given up)" if final else "",
        )  # fmt: skip


# --- sending -----------------------------------------------------------------------------------


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``: the X-CTOps-Signature header."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _body(payload: dict) -> bytes:
    # Sorted keys: the stored payload (jsonb on PostgreSQL reorders keys) is
    # sent byte for byte the same on every attempt.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")


def _policy(settings: object) -> outbound.Policy:
    return outbound.Policy.from_settings(settings)


async def send(channel: NotificationChannel, delivery: NotificationDelivery, payload: dict, *, settings: object,
               timeout: float) -> Outcome:  # fmt: skip
    """One attempt over the channel; never raises for a delivery failure."""
    from backend.schema.core.relay import to_global_id  # the API's ids

    kind = ChannelKind(channel.kind)
    ca_bundle = getattr(settings, "ca_bundle", None)
    try:
        if kind is ChannelKind.WEBHOOK:
            secret = channels.secret_of(channel, settings) or ""
            body = _body(payload)
            timestamp = int(clock.now().timestamp())
            headers = {
                "Content-Type": "application/json",
                "X-CTOps-Event": str(payload.get("event")),
                "X-CTOps-Delivery": str(to_global_id("NotificationDelivery", delivery.first_attempt_id or delivery.id)),
                "X-CTOps-Attempt": str(delivery.attempt),
                "X-CTOps-Timestamp": str(timestamp),
                "X-CTOps-Signature": signature(secret, timestamp, body),
            }
            response = await http_client.post(
                channel.config["url"], body, headers, policy=_policy(settings), timeout=timeout, ca_bundle=ca_bundle
            )
            return _http_outcome(response)
        if kind is ChannelKind.SLACK:
            url = channels.secret_of(channel, settings) or ""
            body = _body(messages.slack_message(payload))
            response = await http_client.post(
                http_client.parse(url, https_only=True), body,
                {"Content-Type": "application/json; charset=utf-8"}, policy=_policy(settings), timeout=timeout,
                ca_bundle=ca_bundle,
            )  # fmt: skip
            return _http_outcome(response)
        return await _send_email(channel, payload, settings=settings, timeout=timeout)
    except CtopsError as exc:
        return Outcome(False, getattr(exc, "smtp_code", None), str(exc))
    except ValueError as exc:
        return Outcome(False, None, f"Unusable channel settings: {exc}.")


def _http_outcome(response: http_client.Response) -> Outcome:
    if response.ok:
        return Outcome(True, response.status)
    snippet = response.body[:200].decode("utf-8", "replace").strip()
    return Outcome(False, response.status, f"HTTP {response.status}" + (f": {snippet}" if snippet else ""))


async def _send_email(channel: NotificationChannel, payload: dict, *, settings: object, timeout: float) -> Outcome:
    url = getattr(settings, "smtp_url", None)
    if not url:
        return Outcome(False, None, "CTOPS_SMTP_URL is not set.")
    try:
        server = mail.parse(url)
    except ValueError as exc:
        return Outcome(False, None, str(exc))
    recipients: Sequence[str] = list(channel.config.get("to") or [])
    sender = str(getattr(settings, "smtp_from", "ctops@localhost"))
    subject, text, html = messages.email_message(payload)
    message = mail.build_message(sender=sender, recipients=recipients, subject=subject, text=text, html=html)
    await mail.send(server, message, sender=sender, recipients=recipients, policy=_policy(settings), timeout=timeout,
                    ca_bundle=getattr(settings, "ca_bundle", None))  # fmt: skip
    return Outcome(True, 250)


# --- tests of a channel ----------------------------------------------------------------------


async def send_test(channel_id: int, *, settings: object) -> NotificationDelivery:
    """Send a TEST notification now (waits up to 10 s); SENT or FAILED, never retried."""
    channel = await NotificationChannel.get_or_none(id=channel_id, deleted_at__isnull=True)
    if channel is None:
        raise NotFound("No notification channel with this id.")
    delivery = await NotificationDelivery.create(
        channel_id=channel.id, alert_id=None, kind=DeliveryKind.TEST, attempt=1, status=DeliveryStatus.PENDING,
        payload=messages.test_payload(channel), created_at=clock.now(), next_attempt_at=None,
    )  # fmt: skip
    timeout = min(TEST_TIMEOUT_SECONDS, float(getattr(settings, "notify_timeout_seconds", TEST_TIMEOUT_SECONDS)))
    return await deliver(delivery.id, settings=settings, timeout=timeout, retry=False)


# --- reading -------------------------------------------------------------------------------------


async def deliveries_of_alerts(alert_ids: Sequence[int]) -> dict[int, list[NotificationDelivery]]:
    rows = await NotificationDelivery.filter(alert_id__in=list(alert_ids)).order_by("id")
    out: dict[int, list[NotificationDelivery]] = {i: [] for i in alert_ids}
    for row in rows:
        out.setdefault(row.alert_id, []).append(row)
    return out


@dataclasses.dataclass(frozen=True)
class DeliveryQuery:
    channel_id: int | None = None
    alert_id: int | None = None
    statuses: tuple[DeliveryStatus, ...] | None = None


def deliveries_queryset(query: DeliveryQuery) -> Any:
    qs = NotificationDelivery.all()
    if query.channel_id is not None:
        qs = qs.filter(channel_id=query.channel_id)
    if query.alert_id is not None:
        qs = qs.filter(alert_id=query.alert_id)
    if query.statuses:
        qs = qs.filter(status__in=[DeliveryStatus(s).value for s in query.statuses])
    return qs


async def list_deliveries(query: DeliveryQuery, first: int | None = None, after: str | None = None):
    from backend.services.pagination import Order, keyset_page

    return await keyset_page(deliveries_queryset(query), Order(("id",), descending=True), first, after)


async def pending_count() -> int:
    return await NotificationDelivery.filter(status=DeliveryStatus.PENDING).count()
