"""Alert evaluation with a moved clock: fire once, resolve by themselves, one
alert per (rule, subject) even under concurrent evaluators, on SQLite and
PostgreSQL. (Sending is ``test_notify.py``; the API ``tests/schema/test_alerts.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import pytest

from backend import clock, db
from backend.models import (
    Alert,
    AlertRule,
    AlertRuleChannel,
    ChannelKind,
    DeliveryKind,
    Host,
    NotificationChannel,
    NotificationDelivery,
    RefreshInterval,
    TrackedSource,
)
from backend.services import alerts, ingest, refresh, sweep, tracked_sources
from backend.services.notification_messages import alert_hostnames
from tests.certs import make_ca, make_cert
from tests.support import inventory
from tests.support.checker import checker_settings, make_pki
from tests.support.reports import document, file_item, service_report
from tests.support.statements import count_statements
from tests.support.tls_servers import TLSServer

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)
T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def frozen():
    def at(instant: dt.datetime) -> dt.datetime:
        clock.freeze(instant)
        return instant

    at(T0)
    yield at
    clock.freeze(None)


@pytest.fixture
def published():
    seen: list[tuple[str, dict]] = []
    db.set_publisher(lambda topic, payload: seen.append((topic, payload)))
    yield seen
    db.set_publisher(None)


@pytest.fixture
async def defaults(database):
    await alerts.ensure_default_rules()
    return {r.default_key: r for r in await AlertRule.all()}


async def channel_on(*rules: AlertRule) -> NotificationChannel:
    """A webhook channel (no network here: deliveries stay PENDING) on these rules."""
    channel = await NotificationChannel.create(
        name="ops", kind=ChannelKind.WEBHOOK, config={"url": "http://127.0.0.1:9/hook"}, created_at=clock.now(),
        updated_at=clock.now(),
    )
    for rule in rules:
        await AlertRuleChannel.create(rule_id=rule.id, channel_id=channel.id)
    return channel


def expiring(name: str, not_after: dt.datetime, **kw):
    return make_cert(name, sans=(name,), not_before=not_after - 300 * DAY, not_after=not_after, **kw)


async def open_alerts(kind: str = "EXPIRY", **filters) -> list[Alert]:
    """Open alerts of one kind (hosts made by the tests go STALE when the clock moves on)."""
    return await Alert.filter(open_key__isnull=False, kind=kind, **filters).order_by("id")


def all_alerts(kind: str = "EXPIRY"):
    return Alert.filter(kind=kind)


async def deliveries(**filters) -> list[tuple[int, str]]:
    return [(d.alert_id, d.kind.value) for d in await NotificationDelivery.filter(**filters).order_by("id")]


async def report(hostname: str, items: list[dict], **kw) -> ingest.ReportResult:
    host = await inventory.host(hostname)
    return await ingest.report_certificates(host.id, f"agent:{hostname}", service_report(document(hostname, items, **kw)))


# --- default rules -------------------------------------------------------------------------------


async def test_default_rules_are_created_once(database):
    created = await asyncio.gather(*(alerts.ensure_default_rules() for _ in range(4)))
    assert sum(created) == 4
    assert await alerts.ensure_default_rules() == 0
    rules = {(r.name, r.kind.value, r.threshold_days, r.failing_for_hours, r.severity.value) for r in await AlertRule.all()}
    assert rules == {
        ("Expires within 30 days", "EXPIRY", 30, None, "WARNING"),
        ("Expires within 7 days", "EXPIRY", 7, None, "CRITICAL"),
        ("Tracked URL failing for 24 hours", "SOURCE_FAILING", None, 24, "WARNING"),
        ("Agent silent", "HOST_STALE", None, None, "WARNING"),
    }
    # A deleted default rule does not come back.
    [seven] = await AlertRule.filter(default_key="expiry-7")
    await alerts.delete_rule(seven.id)
    assert await alerts.ensure_default_rules() == 0
    assert len(await alerts.list_rules()) == 3


# --- EXPIRY --------------------------------------------------------------------------------------


async def test_31_to_30_days_fires_warning_once_and_7_days_critical(defaults, frozen, published):
    channel = await channel_on(defaults["expiry-30"], defaults["expiry-7"])
    c = await inventory.put(expiring("shop.test", T0 + 31 * DAY).der)

    await sweep.sweep()
    frozen(T0 + DAY - SECOND)  # 30 days and one second left: no match
    await sweep.sweep()
    assert await open_alerts() == []

    frozen(T0 + DAY)  # exactly 30 days: matches
    published.clear()
    for _ in range(3):
        await sweep.sweep()
    [warning] = await open_alerts()
    assert (warning.rule_id, warning.certificate_id, warning.severity.value, warning.state.value) == (
        defaults["expiry-30"].id, c.id, "WARNING", "FIRING")  # fmt: skip
    assert warning.fired_at == T0 + DAY
    assert await deliveries(channel_id=channel.id) == [(warning.id, "FIRED")]
    assert [(t, p) for t, p in published if t != "events"] == [
        ("alerts", {"changes": [{"id": warning.id, "change": "FIRED", "severity": "WARNING"}]})]  # fmt: skip

    frozen(T0 + 24 * DAY)  # 7 days left: the CRITICAL rule fires too (status is CRITICAL since 14 days)
    await sweep.sweep()
    await sweep.sweep()
    assert [(a.severity.value, a.rule_id) for a in await open_alerts()] == [
        ("WARNING", defaults["expiry-30"].id), ("CRITICAL", defaults["expiry-7"].id)]  # fmt: skip
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "FIRED"]

    # Expired and still in place: still alerting (it resolves when renewed or removed).
    frozen(T0 + 40 * DAY)
    await sweep.sweep()
    assert len(await open_alerts()) == 2


async def test_renewal_by_an_agent_report_resolves_both_renewed(defaults, frozen, published):
    channel = await channel_on(defaults["expiry-30"], defaults["expiry-7"])
    old = expiring("shop.test", T0 + 5 * DAY)
    await report("web-1.test", [file_item(old.der, "/etc/ssl/shop.pem")])
    # Evaluated right after the report: both rules match a certificate 5 days from expiry.
    assert len(await open_alerts()) == 2
    frozen(T0 + HOUR)
    published.clear()
    renewed = expiring("shop.test", T0 + 95 * DAY)
    await report("web-1.test", [file_item(renewed.der, "/etc/ssl/shop.pem")])
    assert await open_alerts() == []
    resolved = await all_alerts().order_by("id")
    assert [(a.state.value, a.resolution.value, a.resolved_at) for a in resolved] == [
        ("RESOLVED", "RENEWED", T0 + HOUR)] * 2  # fmt: skip
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "FIRED", "RESOLVED", "RESOLVED"]
    changes = [c for t, p in published if t == "alerts" for c in p["changes"]]
    assert sorted((c["id"], c["change"]) for c in changes) == [(a.id, "RESOLVED") for a in resolved]
    # The renewed certificate fires nothing, and another sweep changes nothing.
    await sweep.sweep()
    assert await all_alerts().count() == 2


async def test_a_certificate_on_many_hosts_is_one_alert(defaults, frozen):
    c = await inventory.put(expiring("wild.test", T0 + 20 * DAY).der, hosts=tuple(f"h{i:02}.test" for i in range(40)))
    await sweep.sweep()
    [alert] = await open_alerts()
    assert alert.certificate_id == c.id
    names, count = await alert_hostnames(alert)
    assert count == 40 and names[0] == "h00.test"
    # Leaving some hosts keeps it open; leaving the last one resolves it REMOVED.
    await report("h00.test", [], complete=True)
    await sweep.sweep()
    assert [a.id for a in await open_alerts()] == [alert.id]
    for i in range(1, 40):
        await report(f"h{i:02}.test", [], complete=True)
    [done] = await all_alerts()
    assert (done.state.value, done.resolution.value) == ("RESOLVED", "REMOVED")
    # Once resolved, it still names the hosts that held the certificate during the alert.
    assert (await alert_hostnames(done))[1] == 40


async def test_ca_certificates_only_with_include_ca(defaults, frozen):
    ca = make_ca("Expiring Root", not_before=T0 - 300 * DAY, not_after=T0 + 10 * DAY)
    await inventory.put(ca.der)
    await sweep.sweep()
    assert await open_alerts() == []
    rule = await alerts.create_rule(alerts.RuleInput(name="CAs", threshold_days=30, include_ca=True))
    [alert] = await open_alerts()  # evaluated at once on creation
    assert alert.rule_id == rule.id


async def test_rule_filters_edits_and_deletion(defaults, frozen):
    await inventory.put(expiring("a.test", T0 + 10 * DAY).der, hosts=("one.test",))
    await inventory.put(expiring("b.test", T0 + 10 * DAY).der, hosts=("two.test",))
    one = await Host.get(hostname="one.test")
    rule = await alerts.create_rule(alerts.RuleInput(name="one", threshold_days=15, filter=alerts.RuleFilter(host_id=one.id)))
    assert len(await open_alerts(rule_id=rule.id)) == 1
    rule = await alerts.update_rule(rule.id, filter=alerts.RuleFilter(search="b.TEST"))
    [now_open] = await open_alerts(rule_id=rule.id)
    [gone] = await Alert.filter(rule_id=rule.id, open_key__isnull=True)
    assert gone.resolution.value == "NO_LONGER_MATCHES" and now_open.id != gone.id
    await alerts.update_rule(rule.id, threshold_days=5)
    assert await open_alerts(rule_id=rule.id) == []
    await alerts.update_rule(rule.id, threshold_days=10)
    assert len(await open_alerts(rule_id=rule.id)) == 1
    await alerts.delete_rule(rule.id)
    assert {a.resolution.value for a in await Alert.filter(rule_id=rule.id)} == {"NO_LONGER_MATCHES", "RULE_DELETED"}
    with pytest.raises(Exception, match="No alert rule"):
        await alerts.update_rule(rule.id, name="again")


async def test_rule_input_is_checked(database):
    from backend.errors import BadUserInput, NotFound

    for bad in (
        alerts.RuleInput(name="x"),  # EXPIRY without thresholdDays
        alerts.RuleInput(name="x", threshold_days=-1),
        alerts.RuleInput(name="", threshold_days=3),
        alerts.RuleInput(name="x", kind=alerts.AlertRuleKind.HOST_STALE, threshold_days=3),
        alerts.RuleInput(name="x", kind=alerts.AlertRuleKind.SOURCE_FAILING, include_ca=True),
    ):
        with pytest.raises(BadUserInput):
            await alerts.create_rule(bad)
    with pytest.raises(NotFound):
        await alerts.create_rule(alerts.RuleInput(name="x", threshold_days=3, channel_ids=(99,)))
    source_rule = await alerts.create_rule(alerts.RuleInput(name="urls", kind=alerts.AlertRuleKind.SOURCE_FAILING))
    assert source_rule.failing_for_hours == 24


# --- acknowledgements ----------------------------------------------------------------------------


async def test_acknowledgement_suppresses_until_until(defaults, frozen, published):
    channel = await channel_on(defaults["expiry-30"], defaults["expiry-7"])
    await inventory.put(expiring("shop.test", T0 + 20 * DAY).der)
    await sweep.sweep()
    [warning] = await open_alerts()
    acked = await alerts.acknowledge(warning.id, until=T0 + 2 * DAY, actor="alice")
    assert (acked.state.value, acked.acknowledged_by, acked.acknowledged_until) == ("ACKNOWLEDGED", "alice", T0 + 2 * DAY)
    # Acknowledging again moves `until` and notifies nobody.
    await alerts.acknowledge(warning.id, until=T0 + 3 * DAY, actor="alice")
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "ACKNOWLEDGED"]

    frozen(T0 + 3 * DAY - SECOND)
    await sweep.sweep()
    assert (await Alert.get(id=warning.id)).state.value == "ACKNOWLEDGED"
    frozen(T0 + 3 * DAY)
    published.clear()
    await sweep.sweep()
    await sweep.sweep()
    assert (await Alert.get(id=warning.id)).state.value == "FIRING"
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "ACKNOWLEDGED", "FIRED"]
    assert [c["change"] for t, p in published if t == "alerts" for c in p["changes"]] == ["FIRED"]

    # Until resolved: silent through the sweeps; a more severe rule still fires and notifies.
    await alerts.acknowledge(warning.id, until=None, actor="bob")
    frozen(T0 + 14 * DAY)  # 6 days left
    await sweep.sweep()
    critical = (await open_alerts(rule_id=defaults["expiry-7"].id))[0]
    assert critical.state.value == "FIRING"
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "ACKNOWLEDGED", "FIRED", "ACKNOWLEDGED", "FIRED"]

    # A resolved alert cannot be acknowledged; `until` must lie ahead.
    from backend.errors import BadUserInput

    with pytest.raises(BadUserInput):
        await alerts.acknowledge(critical.id, until=T0, actor="bob")


async def test_a_rule_of_equal_severity_stays_silent_while_acknowledged(defaults, frozen):
    channel = await channel_on(defaults["expiry-30"])
    await inventory.put(expiring("shop.test", T0 + 20 * DAY).der)
    await sweep.sweep()
    [warning] = await open_alerts()
    await alerts.acknowledge(warning.id, until=None, actor="alice")
    other = await alerts.create_rule(alerts.RuleInput(name="another", threshold_days=25, channel_ids=(channel.id,)))
    [second] = await open_alerts(rule_id=other.id)
    assert (second.state.value, second.acknowledged_by) == ("ACKNOWLEDGED", "alice")
    assert [k for _, k in await deliveries(channel_id=channel.id)] == ["FIRED", "ACKNOWLEDGED"]


# --- HOST_STALE, SOURCE_FAILING ------------------------------------------------------------------


async def test_a_silent_agent_fires_host_stale_and_recovers(defaults, frozen):
    await report("quiet.test", [], interval_seconds=600)
    host = await Host.get(hostname="quiet.test")
    frozen(T0 + 30 * 60 * SECOND)  # exactly 3 intervals: not yet
    await sweep.sweep()
    assert await open_alerts("HOST_STALE") == []
    frozen(T0 + 30 * 60 * SECOND + SECOND)
    await sweep.sweep()
    [stale] = await open_alerts("HOST_STALE")
    assert (stale.kind.value, stale.host_id, stale.rule_id) == ("HOST_STALE", host.id, defaults["agent-silent"].id)
    assert (await alert_hostnames(stale)) == (["quiet.test"], 1)
    await report("quiet.test", [], interval_seconds=600)
    [done] = await all_alerts("HOST_STALE")
    assert (done.state.value, done.resolution.value) == ("RESOLVED", "RECOVERED")


async def test_a_retired_host_resolves_removed(defaults, frozen):
    from backend.services import hosts

    await report("old.test", [], interval_seconds=60)
    frozen(T0 + HOUR)
    await sweep.sweep()
    [stale] = await open_alerts("HOST_STALE")
    await hosts.retire_host(stale.host_id, actor="admin")
    assert (await Alert.get(id=stale.id)).resolution.value == "REMOVED"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("alerts-pki"))


async def test_a_tracked_url_failing_past_failing_for_hours_fires_and_recovers(defaults, pki):
    settings = checker_settings(pki)
    chain = pki.chain("shop.test", days=300)
    with TLSServer(chain) as server:
        tracked = await tracked_sources.track_url(
            f"https://127.0.0.1:{server.port}", server_name="shop.test", interval=RefreshInterval.MINUTES_15, settings=settings
        )
    source = tracked.source
    start = clock.now()
    with contextlib.ExitStack() as stack:
        stack.callback(clock.freeze, None)
        clock.freeze(start + HOUR)
        assert (await refresh.refresh_source(source.id, settings=settings)).outcome.value == "FAILED"
        assert await open_alerts("SOURCE_FAILING") == []
        clock.freeze(start + 25 * HOUR)  # failing for 24 hours now
        await refresh.refresh_source(source.id, settings=settings)
        [failing] = await open_alerts("SOURCE_FAILING")
        assert (failing.kind.value, failing.tracked_source_id) == ("SOURCE_FAILING", source.id)
        await sweep.sweep()
        assert len(await open_alerts("SOURCE_FAILING")) == 1
        with TLSServer(chain, port=server.port):
            result = await refresh.refresh_source(source.id, settings=settings)
        assert "REFRESH_RECOVERED" in result.events
        [done] = await all_alerts("SOURCE_FAILING")
        assert (done.state.value, done.resolution.value) == ("RESOLVED", "RECOVERED")


async def test_untracking_resolves_untracked(defaults, frozen, pki):
    from backend.models import SourceKind

    c = await inventory.put(expiring("upload.test", T0 + 3 * DAY).der, hosts=())
    source = await TrackedSource.create(kind=SourceKind.UPLOAD, certificate_id=c.id, created_at=clock.now())
    from backend.services import certificate_rows
    from tortoise import connections

    await certificate_rows.refresh_presence(connections.get("default"), {c.id})
    await sweep.sweep()
    assert len(await open_alerts()) == 2
    await tracked_sources.untrack(source.id)
    assert {a.resolution.value for a in await all_alerts()} == {"UNTRACKED"}


# --- exactly once ----------------------------------------------------------------------------------


async def test_concurrent_evaluations_create_one_alert(defaults, frozen):
    channel = await channel_on(defaults["expiry-30"])
    for i in range(20):
        await inventory.put(expiring(f"c{i}.test", T0 + 20 * DAY).der, hosts=(f"h{i}.test",))
    results = await asyncio.gather(*(alerts.evaluate() for _ in range(8)))
    assert sum(r.fired for r in results) == 20
    assert await all_alerts().count() == 20
    assert len(await deliveries(channel_id=channel.id, kind=DeliveryKind.FIRED)) == 20
    # And resolving concurrently: each resolution notifies once.
    await alerts.update_rule(defaults["expiry-30"].id, enabled=True, threshold_days=30)
    await AlertRule.filter(id=defaults["expiry-30"].id).update(threshold_days=1)
    results = await asyncio.gather(*(alerts.evaluate() for _ in range(8)))
    assert sum(r.resolved for r in results) == 20
    assert len(await deliveries(channel_id=channel.id, kind=DeliveryKind.RESOLVED)) == 20


async def test_an_unchanged_report_costs_no_statement_for_alerts(defaults, frozen):
    items = [file_item(expiring(f"s{i}.test", T0 + 90 * DAY).der, f"/etc/ssl/{i}.pem") for i in range(20)]
    await report("web-1.test", items)
    with count_statements() as before:
        await report("web-1.test", items)
    await AlertRule.all().delete()  # the same report without any rule: the same statements
    with count_statements() as without_rules:
        await report("web-1.test", items)
    assert len(before) == len(without_rules), before
    assert not [s for s in before if s.lstrip().upper().startswith(("SELECT", "INSERT")) and "alert" in s.split("WHERE")[0].lower()]
