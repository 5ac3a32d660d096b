"""Sending notifications to real receivers on loopback, with a moved clock:
the webhook's signature and timestamp, Slack's message, e-mail over STARTTLS
with credentials, retries as PENDING rows that follow the clock, secrets never
stored in clear."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import logging
import os
import stat

import pytest
from cryptography.fernet import Fernet
from tortoise import connections

from backend import clock, outbound, secret_box
from backend.models import (
    Alert,
    AlertRule,
    AlertRuleChannel,
    ChannelKind,
    DeliveryStatus,
    NotificationChannel,
    NotificationDelivery,
)
from backend.schema.core.relay import to_global_id
from backend.services import alerts, channels, notify, sweep
from tests.certs import make_cert
from tests.support import inventory
from tests.support.checker import StaticResolver, checker_settings, make_pki
from tests.support.processes import free_port
from tests.support.receivers import HttpReceiver, smtp_receiver
from tests.support.tls_servers import server_context

DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)
T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = Fernet.generate_key().decode()
SMTP_PASSWORD = "s3cret-smtp-pass"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("notify-pki"), name="Notify Test")


@pytest.fixture
def settings(pki, tmp_path):
    return checker_settings(pki, secret_key=KEY, data_dir=tmp_path, notify_timeout_seconds=3.0)


@pytest.fixture
def frozen():
    def at(instant: dt.datetime) -> dt.datetime:
        clock.freeze(instant)
        return instant

    at(T0)
    yield at
    clock.freeze(None)


async def expiring_alert(rule_keys: tuple[str, ...], channel: NotificationChannel, days: float = 20, hosts=("web-1.test", "web-2.test")):
    """Default rules, ``channel`` on ``rule_keys``, a certificate ``days`` from expiry, swept."""
    await alerts.ensure_default_rules()
    for key in rule_keys:
        rule = await AlertRule.get(default_key=key)
        await AlertRuleChannel.create(rule_id=rule.id, channel_id=channel.id)
    name = "shop.test"
    not_after = clock.now() + days * DAY
    cert = make_cert(name, sans=(name, "www.shop.test"), not_before=not_after - 300 * DAY, not_after=not_after)
    stored = await inventory.put(cert.der, hosts=hosts)
    await sweep.sweep()
    return stored


def check_signature(received, secret: str, now: dt.datetime) -> dict:
    """What a receiver must do: recompute the HMAC over "<timestamp>.<raw body>"."""
    timestamp = received.headers["x-ctops-timestamp"]
    assert int(timestamp) == int(now.timestamp())
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["x-ctops-signature"], f"sha256={expected}")
    return received.json()


# --- webhook ---------------------------------------------------------------------------------


async def test_webhook_is_signed_and_carries_the_alert(database, settings, frozen):
    with HttpReceiver() as receiver:
        created = await channels.create_channel(
            "hook", ChannelKind.WEBHOOK, webhook=channels.WebhookInput(receiver.url("/ctops?team=ops")), settings=settings
        )
        secret = created.generated_secret
        assert secret and len(secret) >= 32
        cert = await expiring_alert(("expiry-30",), created.channel)
        assert await notify.tick(settings) == 1
        [received] = receiver.received
    assert received.path == "/ctops?team=ops"
    body = check_signature(received, secret, T0)
    [alert] = await Alert.filter(kind="EXPIRY")
    [delivery] = await NotificationDelivery.all()
    assert received.headers["x-ctops-delivery"] == to_global_id("NotificationDelivery", delivery.id)
    assert received.headers["content-type"] == "application/json"
    assert body["event"] == "FIRED"
    assert {k: body["alert"][k] for k in ("id", "kind", "state", "severity", "firedAt", "resolution")} == {
        "id": to_global_id("Alert", alert.id), "kind": "EXPIRY", "state": "FIRING", "severity": "WARNING",
        "firedAt": T0.isoformat(), "resolution": None,
    }  # fmt: skip
    assert body["rule"]["name"] == "Expires within 30 days" and body["rule"]["thresholdDays"] == 30
    assert body["certificate"]["fingerprintSha256"] == cert.fingerprint_sha256
    assert body["certificate"]["sans"] == ["shop.test", "www.shop.test"]
    assert body["certificate"]["daysRemaining"] == 20 and body["certificate"]["commonName"] == "shop.test"
    assert body["hosts"] == ["web-1.test", "web-2.test"] and body["trackedSource"] is None
    delivery = await NotificationDelivery.get(id=delivery.id)
    assert (delivery.status, delivery.response_code, delivery.sent_at, delivery.attempt) == (DeliveryStatus.SENT, 200, T0, 1)
    assert (await NotificationChannel.get(id=created.channel.id)).last_delivery_at == T0


async def test_receiver_down_retries_as_the_clock_moves_then_fails(database, settings, frozen, caplog):
    port = free_port()  # nothing listens here
    created = await channels.create_channel(
        "down", ChannelKind.WEBHOOK, webhook=channels.WebhookInput(f"http://127.0.0.1:{port}/hook", "x" * 20), settings=settings
    )
    await expiring_alert(("expiry-30",), created.channel)
    waits = [MINUTE, 5 * MINUTE, 30 * MINUTE, 120 * MINUTE]
    now = T0
    for attempt in range(1, 6):
        assert await notify.tick(settings) == 1
        assert await notify.tick(settings) == 0  # nothing else is due yet
        rows = await NotificationDelivery.all().order_by("id")
        assert [(r.attempt, r.status.value) for r in rows] == [(i, "FAILED") for i in range(1, attempt + 1)] + (
            [(attempt + 1, "PENDING")] if attempt < 5 else [])  # fmt: skip
        assert "refused" in rows[attempt - 1].error and rows[attempt - 1].response_code is None
        if attempt < 5:
            pending = rows[-1]
            assert pending.next_attempt_at == now + waits[attempt - 1]
            assert pending.first_attempt_id == rows[0].id
            frozen(pending.next_attempt_at - dt.timedelta(seconds=1))
            assert await notify.tick(settings) == 0
            now = frozen(pending.next_attempt_at)
    frozen(now + DAY)
    assert await notify.tick(settings) == 0
    assert await NotificationDelivery.filter(status=DeliveryStatus.PENDING).count() == 0
    assert "given up" in caplog.text


async def test_a_retry_that_succeeds_and_an_error_status(database, settings, frozen):
    with HttpReceiver(status=503, answer=b"maintenance") as receiver:
        created = await channels.create_channel(
            "flaky", ChannelKind.WEBHOOK, webhook=channels.WebhookInput(receiver.url(), "y" * 20), settings=settings
        )
        await expiring_alert(("expiry-30",), created.channel)
        await notify.tick(settings)
        receiver.status = 200
        frozen(T0 + MINUTE)
        await notify.tick(settings)
        assert len(receiver.received) == 2
        first, second = receiver.received
    assert first.body == second.body  # the same message, the same delivery id
    assert first.headers["x-ctops-delivery"] == second.headers["x-ctops-delivery"]
    assert second.headers["x-ctops-attempt"] == "2"
    check_signature(second, "y" * 20, T0 + MINUTE)
    rows = await NotificationDelivery.all().order_by("id")
    assert [(r.status.value, r.response_code, r.error) for r in rows] == [
        ("FAILED", 503, "HTTP 503: maintenance"), ("SENT", 200, None)]  # fmt: skip


async def test_claims_are_exclusive_and_survive_a_lost_worker(database, settings, frozen):
    created = await channels.create_channel(
        "c", ChannelKind.WEBHOOK, webhook=channels.WebhookInput("http://127.0.0.1:9/x", "z" * 20), settings=settings
    )
    await expiring_alert(("expiry-30",), created.channel)
    first = await notify.claim_due(clock.now())
    assert len(first) == 1 and await notify.claim_due(clock.now()) == []
    frozen(T0 + notify.LEASE)  # the claimer died: the attempt comes due again
    assert await notify.claim_due(clock.now()) == first


async def test_the_outbound_policy_applies(database, pki, tmp_path, frozen):
    settings = checker_settings(pki, secret_key=KEY, data_dir=tmp_path, outbound_allow=())
    with HttpReceiver() as receiver:
        created = await channels.create_channel(
            "local", ChannelKind.WEBHOOK, webhook=channels.WebhookInput(receiver.url(), "w" * 20), settings=settings
        )
        delivery = await notify.send_test(created.channel.id, settings=settings)
        assert receiver.received == []
    assert delivery.status is DeliveryStatus.FAILED and "loopback" in delivery.error
    assert await NotificationDelivery.all().count() == 1  # a test is never retried


# --- Slack -------------------------------------------------------------------------------------


def validate_slack(message: dict) -> None:
    """What Slack's incoming webhooks accept (Block Kit limits)."""
    assert isinstance(message["text"], str) and 0 < len(message["text"]) <= 3000
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "context", "divider"}
        if kind == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"} and len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert f["type"] in {"mrkdwn", "plain_text"} and len(f["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if kind == "context":
            assert 0 < len(block["elements"]) <= 10


async def test_slack_gets_blocks_over_https(database, settings, pki, tmp_path, frozen):
    tls = server_context(pki.chain("hooks.slack.test"), tmp_path)
    with HttpReceiver(tls=tls) as receiver, outbound.resolver_override(StaticResolver({"hooks.slack.test": ["127.0.0.1"]})):
        url = receiver.url("/services/T000/B000/SECRETTOKEN", host="hooks.slack.test")
        created = await channels.create_channel("slack", ChannelKind.SLACK, slack=channels.SlackInput(url), settings=settings)
        await expiring_alert(("expiry-30", "expiry-7"), created.channel, days=5)
        assert await notify.tick(settings) == 2
        assert len(receiver.received) == 2
    for received in receiver.received:
        assert received.path == "/services/T000/B000/SECRETTOKEN"
        message = received.json()
        validate_slack(message)
    texts = sorted(r.json()["text"] for r in receiver.received)
    assert texts[0].startswith("[CRITICAL] FIRING: Expires within 7 days: Certificate shop.test expires in 5 day(s)")
    assert texts[1].startswith("[WARNING] FIRING: Expires within 30 days")
    # http:// is refused for Slack (the URL is the secret).
    from backend.errors import BadUserInput

    with pytest.raises(BadUserInput):
        await channels.create_channel("plain", ChannelKind.SLACK, slack=channels.SlackInput("http://hooks.slack.test/x"), settings=settings)


# --- e-mail ------------------------------------------------------------------------------------


async def test_email_over_starttls_with_credentials(database, settings, pki, tmp_path, frozen, caplog):
    caplog.set_level(logging.DEBUG)
    tls = server_context(pki.chain("mail.test"), tmp_path)
    with smtp_receiver(tls, user="ctops", password=SMTP_PASSWORD) as box, outbound.resolver_override(StaticResolver({"mail.test": ["127.0.0.1"]})):
        mail_settings = dataclasses.replace(
            settings, smtp_url=f"smtp://ctops:{SMTP_PASSWORD}@mail.test:{box.port}", smtp_from="CT-Ops <ctops@example.test>"
        )
        created = await channels.create_channel(
            "ops mail", ChannelKind.EMAIL, email=channels.EmailInput(("ops@example.test", "oncall@example.test")),
            settings=mail_settings,
        )  # fmt: skip
        await expiring_alert(("expiry-7",), created.channel, days=3)
        assert await notify.tick(mail_settings) == 1
        [(sender, recipients, raw)] = box.messages
        assert box.logins == ["ctops"]
    assert sender == "ctops@example.test" and recipients == ["ops@example.test", "oncall@example.test"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"].startswith("[CT-Ops] [CRITICAL] FIRING: Expires within 7 days")
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "shop.test" in text and "web-1.test, web-2.test" in text
    assert "<table>" in html and "shop.test" in html
    [delivery] = await NotificationDelivery.all()
    assert (delivery.status, delivery.response_code) == (DeliveryStatus.SENT, 250)
    assert SMTP_PASSWORD not in caplog.text


async def test_email_credentials_never_cross_in_clear(database, settings, frozen, caplog):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)  # no STARTTLS
    controller.start()
    try:
        mail_settings = dataclasses.replace(settings, smtp_url=f"smtp://ctops:{SMTP_PASSWORD}@127.0.0.1:{port}")
        created = await channels.create_channel(
            "m", ChannelKind.EMAIL, email=channels.EmailInput(("ops@example.test",)), settings=mail_settings
        )
        delivery = await notify.send_test(created.channel.id, settings=mail_settings)
    finally:
        controller.stop()
    assert delivery.status is DeliveryStatus.FAILED
    assert "does not offer STARTTLS" in delivery.error and SMTP_PASSWORD not in delivery.error
    assert SMTP_PASSWORD not in caplog.text


def test_smtp_urls_are_redacted():
    from backend import mail

    assert mail.redacted("smtp://user:pa%40ss@mail.test:587") == "smtp://user:***@mail.test:587"
    assert mail.redacted("smtps://mail.test") == "smtps://mail.test"
    server = mail.parse("smtp://us%40er:pa%40ss@mail.test:587")
    assert (server.username, server.password, server.port) == ("us@er", "pa@ss", 587)
    assert "pa@ss" not in repr(server)
    assert mail.parse("smtps://mail.test").port == 465


# --- secrets at rest ---------------------------------------------------------------------------


async def test_secrets_are_never_stored_in_clear(database, settings):
    webhook = await channels.create_channel(
        "w", ChannelKind.WEBHOOK, webhook=channels.WebhookInput("https://hooks.example.test/in", "a-webhook-secret-123"),
        settings=settings,
    )  # fmt: skip
    slack_url = "https://hooks.slack.com/services/T0/B0/verysecrettoken"
    slack = await channels.create_channel("s", ChannelKind.SLACK, slack=channels.SlackInput(slack_url), settings=settings)
    rows = await connections.get("default").execute_query_dict("SELECT * FROM notification_channel")
    dumped = repr(rows)
    for plaintext in ("a-webhook-secret-123", "verysecrettoken", base64.b64encode(b"a-webhook-secret-123").decode()):
        assert plaintext not in dumped
    assert channels.secret_of(await NotificationChannel.get(id=webhook.channel.id), settings) == "a-webhook-secret-123"
    assert channels.secret_of(await NotificationChannel.get(id=slack.channel.id), settings) == slack_url
    # Rotation: a new key first, the old one after it, still reads them.
    rotated = dataclasses.replace(settings, secret_key=f"{Fernet.generate_key().decode()},{KEY}")
    assert channels.secret_of(await NotificationChannel.get(id=slack.channel.id), rotated) == slack_url
    # A wrong key is a clear error, never garbage.
    wrong = dataclasses.replace(settings, secret_key=Fernet.generate_key().decode())
    with pytest.raises(secret_box.SecretUnreadable):
        channels.secret_of(await NotificationChannel.get(id=slack.channel.id), wrong)


async def test_embedded_mode_generates_the_key_once_mode_0600(database, pki, tmp_path):
    embedded = checker_settings(pki, secret_key=None, data_dir=tmp_path / "data")
    await secret_box.check_ready(embedded)
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_text()
    created = await channels.create_channel(
        "w", ChannelKind.WEBHOOK, webhook=channels.WebhookInput("https://h.example.test/", "b" * 20), settings=embedded
    )
    await secret_box.check_ready(embedded)
    assert path.read_text() == key
    assert channels.secret_of(await NotificationChannel.get(id=created.channel.id), embedded) == "b" * 20


async def test_production_mode_needs_the_key(database, pki, tmp_path):
    production = checker_settings(pki, secret_key=None, data_dir=tmp_path, redis_url="redis://127.0.0.1:1")
    from backend.errors import BadUserInput

    with pytest.raises(BadUserInput, match="CTOPS_SECRET_KEY"):
        await channels.create_channel(
            "w", ChannelKind.WEBHOOK, webhook=channels.WebhookInput("https://h.example.test/"), settings=production
        )
    await secret_box.check_ready(production)  # no channel needs it yet: starts
    with_key = dataclasses.replace(production, secret_key=KEY)
    await channels.create_channel("w", ChannelKind.WEBHOOK, webhook=channels.WebhookInput("https://h.example.test/"), settings=with_key)
    with pytest.raises(SystemExit, match="CTOPS_SECRET_KEY is not set"):
        await secret_box.check_ready(production)
    with pytest.raises(SystemExit, match="not a Fernet key"):
        secret_box.validate_settings(dataclasses.replace(production, secret_key="too-short"))
    assert not (tmp_path / "secret.key").exists()
