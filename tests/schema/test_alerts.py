"""Alerts, rules and channels through the real HTTP stack, and ``alertEvents``
over a real websocket to a real uvicorn server (in this process, on the test
database), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import httpx
import pytest
from cryptography.fernet import Fernet
from tortoise import connections

from backend import clock
from backend.models import Role
from backend.services import alerts, sweep
from tests.certs import make_cert
from tests.conftest import make_settings
from tests.support import inventory
from tests.support.graphql import GraphQLClient
from tests.support.live import live_client
from tests.support.processes import free_port
from tests.support.receivers import HttpReceiver

DAY = dt.timedelta(days=1)
KEY = Fernet.generate_key().decode()
LOOPBACK = ("127.0.0.0/8",)

RULES = "{ alertRules { id name kind thresholdDays failingForHours severity includeCa enabled filter { hostId search source } channels { id name } } }"
CREATE_CHANNEL = """mutation($input: CreateNotificationChannelInput!) { createNotificationChannel(input: $input) {
  generatedSecret channel { id name kind enabled lastDeliveryAt config { __typename
    ... on WebhookConfig { url secretSet } ... on SlackConfig { webhookUrlSet } ... on EmailConfig { to } } } } }"""
CHANNELS = """{ notificationChannels { id name kind config { __typename ... on WebhookConfig { url secretSet }
  ... on SlackConfig { webhookUrlSet } ... on EmailConfig { to } } } }"""
CREATE_RULE = """mutation($input: CreateAlertRuleInput!) { createAlertRule(input: $input) {
  id name kind thresholdDays severity includeCa enabled filter { hostId search source } channels { name } } }"""
ALERTS = """query($f: AlertFilter, $first: Int) { alerts(first: $first, filter: $f) { totalCount edges { node {
  id kind state severity firedAt resolution acknowledgedBy acknowledgedUntil hostCount hosts(first: 3) { hostname }
  rule { name } certificate { commonName } deliveries { kind status attempt channel { name } } } } } }"""


@pytest.fixture
def api_settings(database, tmp_path):
    return make_settings(database.url, secret_key=KEY, data_dir=tmp_path, outbound_allow=LOOPBACK, notify_timeout_seconds=3.0)


@pytest.fixture
async def api(api_settings, make_token):
    from backend.app import create_app

    app = create_app(api_settings, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctops.test") as http:
        yield GraphQLClient(http, await make_token(Role.EDITOR, "editor"))


@pytest.fixture
def frozen():
    clock.freeze(dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.timezone.utc))
    yield clock.now()
    clock.freeze(None)


def expiring(name: str, days: float, **kw) -> bytes:
    not_after = clock.now() + days * DAY
    return make_cert(name, sans=(name,), not_before=not_after - 300 * DAY, not_after=not_after, **kw).der


async def test_channels_show_no_secret_and_the_generated_one_once(api, api_settings):
    body = await api.execute(CREATE_CHANNEL, {"input": {"name": "hook", "kind": "WEBHOOK", "webhook": {"url": "https://hooks.example.test/ct?x=1"}}})
    assert not body.get("errors"), body
    created = body["data"]["createNotificationChannel"]
    secret = created["generatedSecret"]
    assert secret and created["channel"]["config"] == {
        "__typename": "WebhookConfig", "url": "https://hooks.example.test/ct?x=1", "secretSet": True}  # fmt: skip
    slack_url = "https://hooks.slack.com/services/T1/B1/thesecretpart"
    slack = await api.data(CREATE_CHANNEL, {"input": {"name": "slack", "kind": "SLACK", "slack": {"webhookUrl": slack_url}}})
    assert slack["createNotificationChannel"]["generatedSecret"] is None
    listed = await api.post(CHANNELS)
    assert secret not in listed.text and "thesecretpart" not in listed.text
    assert [c["config"]["__typename"] for c in listed.json()["data"]["notificationChannels"]] == ["WebhookConfig", "SlackConfig"]
    rows = await connections.get("default").execute_query_dict("SELECT * FROM notification_channel")
    assert secret not in repr(rows) and "thesecretpart" not in repr(rows)
    # Updating without a secret keeps it; a bad config is a typed error.
    channel_id = created["channel"]["id"]
    update = "mutation($id: ID!, $input: UpdateNotificationChannelInput!) { updateNotificationChannel(id: $id, input: $input) { name enabled config { ... on WebhookConfig { url secretSet } } } }"
    changed = await api.data(update, {"id": channel_id, "input": {"name": "hook2", "enabled": False, "webhook": {"url": "http://10.0.0.5/in"}}})
    assert changed["updateNotificationChannel"] == {"name": "hook2", "enabled": False, "config": {"url": "http://10.0.0.5/in", "secretSet": True}}
    assert await api.error_codes(CREATE_CHANNEL, {"input": {"name": "x", "kind": "WEBHOOK", "webhook": {"url": "ftp://a"}}}) == ["BAD_USER_INPUT"]
    assert await api.error_codes(CREATE_CHANNEL, {"input": {"name": "x", "kind": "EMAIL", "email": {"to": ["a@b.test"]}}}) == ["BAD_USER_INPUT"]  # no SMTP URL
    assert await api.error_codes(CREATE_CHANNEL, {"input": {"name": "x", "kind": "SLACK", "webhook": {"url": "https://a.test"}}}) == ["BAD_USER_INPUT"]
    deleted = await api.data("mutation($id: ID!) { deleteNotificationChannel(id: $id) }", {"id": channel_id})
    assert deleted == {"deleteNotificationChannel": True}
    assert await api.error_codes("mutation($id: ID!) { deleteNotificationChannel(id: $id) }", {"id": channel_id}) == ["NOT_FOUND"]


async def test_test_notification_channel_sends_now(api):
    with HttpReceiver() as receiver:
        created = await api.data(CREATE_CHANNEL, {"input": {"name": "hook", "kind": "WEBHOOK", "webhook": {"url": receiver.url(), "secret": "s" * 16}}})
        channel_id = created["createNotificationChannel"]["channel"]["id"]
        result = await api.data(
            "mutation($id: ID!) { testNotificationChannel(id: $id) { kind status attempt responseCode error nextAttemptAt alert { id } channel { name lastDeliveryAt } } }",
            {"id": channel_id},
        )
        [received] = receiver.received
    delivery = result["testNotificationChannel"]
    assert {k: delivery[k] for k in ("kind", "status", "attempt", "responseCode", "error", "nextAttemptAt", "alert")} == {
        "kind": "TEST", "status": "SENT", "attempt": 1, "responseCode": 200, "error": None, "nextAttemptAt": None, "alert": None}  # fmt: skip
    assert delivery["channel"]["lastDeliveryAt"] is not None
    assert received.json()["event"] == "TEST"
    down = await api.data(CREATE_CHANNEL, {"input": {"name": "down", "kind": "WEBHOOK", "webhook": {"url": f"http://127.0.0.1:{free_port()}/"}}})
    failed = await api.data("mutation($id: ID!) { testNotificationChannel(id: $id) { status error nextAttemptAt } }",
                            {"id": down["createNotificationChannel"]["channel"]["id"]})  # fmt: skip
    assert failed["testNotificationChannel"]["status"] == "FAILED" and failed["testNotificationChannel"]["nextAttemptAt"] is None


async def test_rules_and_alerts_through_the_api(api, make_token, frozen):
    await alerts.ensure_default_rules()
    rules = (await api.data(RULES))["alertRules"]
    assert [(r["name"], r["kind"], r["severity"]) for r in rules] == [
        ("Expires within 30 days", "EXPIRY", "WARNING"), ("Expires within 7 days", "EXPIRY", "CRITICAL"),
        ("Tracked URL failing for 24 hours", "SOURCE_FAILING", "WARNING"), ("Agent silent", "HOST_STALE", "WARNING")]  # fmt: skip
    channel = await api.data(CREATE_CHANNEL, {"input": {"name": "ops", "kind": "WEBHOOK", "webhook": {"url": "http://127.0.0.1:9/"}}})
    channel_id = channel["createNotificationChannel"]["channel"]["id"]

    cert = await inventory.put(expiring("wild.test", 10), hosts=tuple(f"h{i:02}.test" for i in range(40)))
    await inventory.put(expiring("root.test", 10, is_ca=True), hosts=("h00.test",))
    host = (await api.data('{ host(hostname: "h00.test") { id } }'))["host"]["id"]
    created = await api.data(CREATE_RULE, {"input": {"name": "h00 only", "thresholdDays": 14, "severity": "CRITICAL",
                                                      "filter": {"hostId": host}, "channelIds": [channel_id]}})  # fmt: skip
    rule = created["createAlertRule"]
    assert rule["filter"] == {"hostId": host, "search": None, "source": None} and rule["channels"] == [{"name": "ops"}]
    assert rule["kind"] == "EXPIRY" and rule["includeCa"] is False
    await sweep.sweep()

    page = (await api.data(ALERTS, {"f": {"kinds": ["EXPIRY"]}, "first": 10}))["alerts"]
    assert page["totalCount"] == 2  # the 30-day default and the new rule; the CA is left out
    by_rule = {e["node"]["rule"]["name"]: e["node"] for e in page["edges"]}
    mine = by_rule["h00 only"]
    assert (mine["hostCount"], [h["hostname"] for h in mine["hosts"]]) == (40, ["h00.test", "h01.test", "h02.test"])
    assert (mine["severity"], mine["state"], mine["certificate"]["commonName"]) == ("CRITICAL", "FIRING", "wild.test")
    assert mine["deliveries"] == [{"kind": "FIRED", "status": "PENDING", "attempt": 1, "channel": {"name": "ops"}}]
    critical = (await api.data(ALERTS, {"f": {"severities": ["CRITICAL"], "states": ["FIRING"]}}))["alerts"]
    assert [e["node"]["id"] for e in critical["edges"]] == [mine["id"]]
    by_cert = await api.data(ALERTS, {"f": {"certificateId": _gid("Certificate", cert.id)}})
    assert by_cert["alerts"]["totalCount"] == 2

    until = (clock.now() + 2 * DAY).isoformat()
    ack = await api.data("mutation($id: ID!, $until: DateTime) { acknowledgeAlert(id: $id, until: $until) { state acknowledgedBy acknowledgedUntil } }",
                         {"id": mine["id"], "until": until})  # fmt: skip
    assert ack["acknowledgeAlert"] == {"state": "ACKNOWLEDGED", "acknowledgedBy": "editor", "acknowledgedUntil": until}
    node = await api.data("query($id: ID!) { node(id: $id) { id ... on Alert { state rule { name } } } }", {"id": mine["id"]})
    assert node["node"]["state"] == "ACKNOWLEDGED"

    update = "mutation($id: ID!, $input: UpdateAlertRuleInput!) { updateAlertRule(id: $id, input: $input) { thresholdDays name enabled } }"
    assert (await api.data(update, {"id": rule["id"], "input": {"thresholdDays": 5}}))["updateAlertRule"]["thresholdDays"] == 5
    after = (await api.data("query($id: ID!) { node(id: $id) { ... on Alert { state resolution } } }", {"id": mine["id"]}))["node"]
    assert after == {"state": "RESOLVED", "resolution": "NO_LONGER_MATCHES"}
    assert await api.error_codes(update, {"id": rule["id"], "input": {"name": None}}) == ["BAD_USER_INPUT"]
    assert await api.data("mutation($id: ID!) { deleteAlertRule(id: $id) }", {"id": rule["id"]}) == {"deleteAlertRule": True}
    assert await api.error_codes("mutation($id: ID!) { deleteAlertRule(id: $id) }", {"id": rule["id"]}) == ["NOT_FOUND"]
    assert await api.error_codes(CREATE_RULE, {"input": {"name": "no threshold"}}) == ["BAD_USER_INPUT"]

    viewer = await make_token(Role.VIEWER, "viewer")
    assert await api.error_codes(CREATE_RULE, {"input": {"name": "v", "thresholdDays": 3}}, token=viewer) == ["FORBIDDEN"]
    assert (await api.data(RULES, token=viewer))["alertRules"]


def _gid(type_name: str, pk: int) -> str:
    from backend.schema.core.relay import to_global_id

    return to_global_id(type_name, pk)


# --- alertEvents over a real websocket ---------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings):
    """A real uvicorn server in this process (its lifespan starts the bus and the feeds)."""
    import uvicorn

    from backend.app import create_app

    port = free_port()
    app = create_app(settings, manage_database=False, run_jobs=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


EVENTS = "subscription($f: AlertEventFilter) { alertEvents(filter: $f) { change alert { id state severity resolution kind rule { name } certificate { commonName } hostCount } } }"


async def test_alert_events_over_a_real_websocket(api_settings, make_token, frozen):
    viewer = await make_token(Role.VIEWER, "watcher")
    await alerts.ensure_default_rules()
    from backend.models import AlertRule

    await AlertRule.filter(default_key="agent-silent").update(enabled=False)  # the hosts go quiet as time moves
    async with serving(api_settings) as url, live_client(url, viewer) as client:
        everything = await client.subscribe(EVENTS)
        critical = await client.subscribe(EVENTS, {"f": {"severities": ["CRITICAL"]}})
        await asyncio.sleep(0.2)  # both registered
        await inventory.put(expiring("live.test", 20), hosts=("a.test", "b.test"))
        await sweep.sweep()
        fired = (await client.next(everything))["alertEvents"]
        assert fired["change"] == "FIRED"
        assert {k: fired["alert"][k] for k in ("state", "severity", "kind", "hostCount")} == {
            "state": "FIRING", "severity": "WARNING", "kind": "EXPIRY", "hostCount": 2}  # fmt: skip
        assert fired["alert"]["certificate"]["commonName"] == "live.test"
        await client.nothing(critical, 0.3)

        clock.freeze(clock.now() + 14 * DAY)  # 6 days left: the CRITICAL rule fires
        await sweep.sweep()
        crit = (await client.next(critical))["alertEvents"]
        assert (crit["change"], crit["alert"]["severity"], crit["alert"]["rule"]["name"]) == ("FIRED", "CRITICAL", "Expires within 7 days")
        assert (await client.next(everything))["alertEvents"]["alert"]["id"] == crit["alert"]["id"]

        # Renewed elsewhere? No: removed from both hosts by a retirement -> RESOLVED (REMOVED).
        from backend.models import Host
        from backend.services import hosts

        for hostname in ("a.test", "b.test"):
            await hosts.retire_host((await Host.get(hostname=hostname)).id, actor="admin")
        seen = set()
        for _ in range(2):
            event = (await client.next(everything))["alertEvents"]
            assert (event["change"], event["alert"]["state"], event["alert"]["resolution"]) == ("RESOLVED", "RESOLVED", "REMOVED")
            seen.add(event["alert"]["id"])
        assert crit["alert"]["id"] in seen and fired["alert"]["id"] in seen
        resolved = (await client.next(critical))["alertEvents"]
        assert resolved["alert"]["id"] == crit["alert"]["id"] and resolved["change"] == "RESOLVED"


async def test_readyz_redacts_the_smtp_password(database, tmp_path):
    from backend.app import create_app

    settings = make_settings(database.url, secret_key=KEY, data_dir=tmp_path, smtp_url="smtp://ops:hunter2hunter2@mail.test:587")
    app = create_app(settings, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctops.test") as http:
        response = await http.get("/readyz")
    assert "hunter2hunter2" not in response.text
    assert response.json()["notifications"] == {"smtp": "smtp://ops:***@mail.test:587", "secretKey": "configured", "pendingDeliveries": 0}
    assert "hunter2hunter2" not in repr(settings) and KEY not in repr(settings)
    json.dumps(response.json())
