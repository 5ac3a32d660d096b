"""docs/alerts.md's webhook receiver, run as written against real notifications."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from http.server import HTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from backend.models import AlertRule, AlertRuleChannel, ChannelKind, DeliveryStatus, NotificationDelivery
from backend.services import alerts, channels, notify, sweep
from tests.certs import make_cert
from tests.support import inventory
from tests.support.checker import checker_settings
from tests.support.processes import free_port

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def receiver_example() -> str:
    text = DOC.read_text()
    found = re.search(r"<!-- webhook-receiver-example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/alerts.md lost its receiver example"
    return found.group(1)


@pytest.fixture
def receiver():
    """The doc's code, loaded as a module and served on loopback."""
    namespace: dict = {"__name__": "ctops_receiver_example"}
    exec(compile(receiver_example(), str(DOC), "exec"), namespace)
    events: list[dict] = []
    namespace["handle"] = events.append
    namespace["SECRET"] = b"the-channel-secret-0123456789"
    port = free_port()
    server = HTTPServer(("127.0.0.1", port), namespace["Receiver"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield namespace, port, events
    finally:
        server.shutdown()
        server.server_close()


async def test_the_documented_receiver_accepts_our_notifications(database, receiver, tmp_path):
    namespace, port, events = receiver
    settings = checker_settings(None, secret_key=Fernet.generate_key().decode(), data_dir=tmp_path)
    created = await channels.create_channel(
        "doc", ChannelKind.WEBHOOK,
        webhook=channels.WebhookInput(f"http://127.0.0.1:{port}/", namespace["SECRET"].decode()), settings=settings,
    )  # fmt: skip
    test = await notify.send_test(created.channel.id, settings=settings)
    assert (test.status, test.response_code) == (DeliveryStatus.SENT, 204)
    assert events[0]["event"] == "TEST"

    await alerts.ensure_default_rules()
    rule = await AlertRule.get(default_key="expiry-30")
    await AlertRuleChannel.create(rule_id=rule.id, channel_id=created.channel.id)
    await inventory.put(make_cert("doc.test", sans=("doc.test",), days=12).der)
    await sweep.sweep()
    await notify.tick(settings)
    assert [e["event"] for e in events] == ["TEST", "FIRED"]
    assert events[1]["certificate"]["commonName"] == "doc.test"
    assert await NotificationDelivery.filter(status=DeliveryStatus.SENT).count() == 2


async def test_the_documented_receiver_refuses_bad_signatures_and_replays(receiver):
    namespace, port, events = receiver
    secret = namespace["SECRET"]
    body = b'{"event":"TEST","hosts":[]}'

    def signed(timestamp: int, payload: bytes = body) -> dict[str, str]:
        digest = hmac.new(secret, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
        return {"X-CTOps-Timestamp": str(timestamp), "X-CTOps-Signature": f"sha256={digest}", "X-CTOps-Delivery": "d1"}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        now = int(time.time())
        assert (await http.post("/", content=body, headers=signed(now))).status_code == 204
        assert (await http.post("/", content=body, headers=signed(now))).status_code == 204  # a retry: handled once
        assert (await http.post("/", content=body + b" ", headers=signed(now))).status_code == 401  # tampered
        assert (await http.post("/", content=body, headers=signed(now - 600))).status_code == 401  # replayed
        assert (await http.post("/", content=body, headers={"X-CTOps-Timestamp": str(now)})).status_code == 401
    assert len(events) == 1
    assert namespace["verify"](secret, str(now), body, signed(now)["X-CTOps-Signature"], now=now + 299)
    assert not namespace["verify"](secret, str(now), body, signed(now)["X-CTOps-Signature"], now=now + 301)
