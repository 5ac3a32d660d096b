"""/metrics: Prometheus text that prometheus_client's own parser reads."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend import db
from backend.models import Role
from backend.services import tokens
from tests.certs import make_cert
from tests.support import inventory
from tests.support.databases import create_pg_database, drop_pg_database, forget_cached_statements, migrated
from tests.support.live import live_client
from tests.support.processes import ctops_args, ctops_env, free_port, running, wait_for_port
from tests.support.reports import REPORT, document, file_item


def parse(text: str) -> dict[str, list]:
    """family name -> samples (prometheus_client names counters without ``_total``)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, **labels: str) -> float:
    [match] = [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return match.value


async def test_metrics_need_an_admin_token_unless_public(app_factory, make_token):
    admin, viewer = await make_token(Role.ADMIN), await make_token(Role.VIEWER)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_factory()), base_url="http://t") as http:
        missing = await http.get("/metrics")
        assert missing.status_code == 401 and missing.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        bad = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        refused = await http.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
        assert refused.status_code == 403 and refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        ok = await http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
        assert "ctops_certificates" in parse(ok.text)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_factory(metrics_public=True)), base_url="http://t") as http:
        public = await http.get("/metrics")
        assert public.status_code == 200 and "ctops_certificates" in parse(public.text)


async def test_gauges_are_read_from_the_database_at_scrape_time(app_factory, gql, admin_token):
    now = dt.datetime.now(dt.timezone.utc)
    soonest = make_cert("soon.test", sans=("soon.test",), not_before=now - dt.timedelta(days=80), not_after=now + dt.timedelta(days=3))
    for name, days in [("ok.test", 200), ("warn.test", 20), ("old.test", -2)]:
        await inventory.put(make_cert(name, sans=(name,), not_before=now - dt.timedelta(days=300), not_after=now + dt.timedelta(days=days)).der, path=f"/{name}")
    await inventory.put(soonest.der, path="/soon")
    await inventory.put(make_cert("gone.test", sans=("gone.test",), days=5).der, path="/gone", removed=True)
    stats = (await gql.data("{ certificateStats { total ok warning critical expired } }"))["certificateStats"]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_factory(metrics_cert_limit=2)), base_url="http://t") as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"})).text
    families = parse(text)
    by_status = families["ctops_certificates"]
    for status in ("ok", "warning", "critical", "expired"):
        assert value(by_status, status=status.upper()) == stats[status]
    assert sum(s.value for s in by_status) == stats["total"] == 4  # the removed one is not current
    not_after = families["ctops_certificate_not_after_seconds"]
    assert [s.labels["common_name"] for s in not_after] == ["old.test", "soon.test"]  # soonest first, limit 2
    assert value(not_after, fingerprint=soonest.fingerprint) == pytest.approx(soonest.cert.not_valid_after_utc.timestamp())
    # counters are there from the start
    for name in ("ctops_ingest_reports", "ctops_bus_dropped", "ctops_subscriptions_active"):
        assert name in families, name


@pytest.fixture
async def pg_url():
    url = await create_pg_database("ctops_metrics")
    await migrated(url)
    yield url
    await drop_pg_database(url)


async def test_counters_are_summed_across_serve_workers(tmp_path, pg_url, redis_url):
    """`ctops serve --workers 2`: each worker process counts its own; any
    scrape answers the sum (prometheus_client multiprocess mode)."""
    forget_cached_statements()
    await db.init(pg_url)
    try:
        admin = (await tokens.create_token("admin", Role.ADMIN)).secret
        host = await inventory.host("metrics-host.test")
        agent = (await tokens.create_token("agent", Role.AGENT, host_id=host.id)).secret
    finally:
        await db.close()
    env = ctops_env(DATABASE_URL=pg_url, REDIS_URL=redis_url, CTOPS_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    with running(ctops_args("serve", "--port", str(port), "--workers", "2"), env, tmp_path / "serve.log"):
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            # connections spread over both workers (fresh connections each time)
            for i in range(6):
                doc = document("metrics-host.test", [file_item(make_cert(f"m{i}.test", sans=(f"m{i}.test",)).der, f"/m{i}.pem")])
                response = await http.post(
                    "/graphql", json={"query": REPORT, "variables": {"input": doc}},
                    headers={"Authorization": f"Bearer {agent}", "Connection": "close"},
                )
                assert not response.json().get("errors"), response.text
            clients = []
            try:
                for _ in range(5):
                    client = live_client(f"ws://127.0.0.1:{port}/graphql", admin)
                    live = await client.__aenter__()
                    clients.append(client)
                    await live.subscribe("subscription { certificateEvents { id } }")
                await asyncio.sleep(0.5)
                seen = set()
                for _ in range(8):
                    families = parse((await http.get("/metrics", headers={**auth, "Connection": "close"})).text)
                    assert families["ctops_ingest_reports"][0].value == 6
                    assert value(families["ctops_subscriptions_active"]) == 5
                    seen.add(value(families["ctops_certificates"], status="OK"))
                assert seen == {1}  # each complete scan replaced the last one
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                families = parse((await http.get("/metrics", headers=auth)).text)
                if value(families["ctops_subscriptions_active"]) == 0:
                    break
                await asyncio.sleep(0.2)
            assert value(families["ctops_subscriptions_active"]) == 0
    log = (tmp_path / "serve.log").read_text()
    assert log.count("Started server process") >= 2, log  # really two workers


def test_worker_serves_its_counters(tmp_path, redis_url):
    env = ctops_env(REDIS_URL=redis_url, CTOPS_DATA_DIR=str(tmp_path / "data"))
    from tests.support.processes import ctops

    ctops("migrate", env={**env, "DATABASE_URL": f"sqlite://{tmp_path / 'w.sqlite3'}"})
    env["DATABASE_URL"] = f"sqlite://{tmp_path / 'w.sqlite3'}"
    port = free_port()
    with running(ctops_args("worker", "--metrics-port", str(port)), env, tmp_path / "worker.log"):
        wait_for_port(port, timeout=30)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families = parse(text)
    refreshes = families["ctops_refresh"]
    assert {s.labels["result"] for s in refreshes if s.name == "ctops_refresh_total"} == {"unchanged", "changed", "failed", "skipped"}
