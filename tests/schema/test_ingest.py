"""Enrolment and reports through the real HTTP stack, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest

from backend import clock
from backend.models import Certificate, CertificateEvent, CertificateLocation, ScanPart
from tests import certs
from tests.support.databases import postgres_only
from tests.support.graphql import GraphQLClient
from tests.support.reports import REPORT, document, file_item
from tests.support.statements import count_statements

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)

CREATE = """
mutation($input: CreateEnrollmentTokenInput!) {
  createEnrollmentToken(input: $input) { token enrollmentToken { id name usesLeft maxUses expiresAt } }
}
"""
ENROLL = "mutation($input: EnrollAgentInput!) { enrollAgent(input: $input) { agentToken host { id hostname } } }"
HOST = """
query($hostname: String!) {
  host(hostname: $hostname) {
    id hostname os agentVersion lastReportAt intervalSeconds status worstStatus scanErrors { path reason }
    certificates(filter: {includeHistory: true}) { edges { node { commonName } } }
  }
}
"""
RETIRE = "mutation($id: ID!) { retireHost(id: $id) { hostname status retiredAt } }"


@pytest.fixture
def at():
    def move(minutes: float = 0) -> dt.datetime:
        clock.freeze(T0 + minutes * MINUTE)
        return T0 + minutes * MINUTE

    move(0)
    yield move
    clock.freeze(None)


def leaf(name: str, days_left: float = 60) -> bytes:
    not_after = T0 + days_left * DAY
    return certs.make_cert(name, sans=(name,), not_before=not_after - 90 * DAY, not_after=not_after).der


async def enrollment_token(gql: GraphQLClient, name: str = "rollout", max_uses: int = 1) -> str:
    data = await gql.data(CREATE, {"input": {"name": name, "maxUses": max_uses}})
    return data["createEnrollmentToken"]["token"]


async def enroll(gql: GraphQLClient, hostname: str) -> str:
    secret = await enrollment_token(gql, f"for {hostname} {uuid.uuid4().hex[:8]}")
    data = await gql.data(ENROLL, {"input": {"hostname": hostname, "os": "TestOS", "agentVersion": "1.0"}}, token=secret)
    return data["enrollAgent"]["agentToken"]


async def send(gql: GraphQLClient, agent: str, doc: dict) -> dict:
    return (await gql.data(REPORT, {"input": doc}, token=agent))["reportCertificates"]


async def test_enrolment_tokens_are_managed_by_admins_and_used_by_agents(gql, at):
    data = await gql.data(CREATE, {"input": {"name": "rollout", "maxUses": 2, "expiresInHours": 1}})
    created = data["createEnrollmentToken"]
    secret = created["token"]
    assert secret.startswith("ctops_enr_")
    assert created["enrollmentToken"] | {"id": None} == {
        "id": None, "name": "rollout", "usesLeft": 2, "maxUses": 2, "expiresAt": (T0 + dt.timedelta(hours=1)).isoformat(),
    }  # fmt: skip

    # An enrolment token can enrol, and nothing else.
    assert await gql.error_codes("{ certificates { totalCount } }", token=secret) == ["FORBIDDEN"]
    assert await gql.error_codes("{ enrollmentTokens { totalCount } }", token=secret) == ["FORBIDDEN"]
    enrolled = await gql.data(ENROLL, {"input": {"hostname": "Web-1.test", "os": "Linux"}}, token=secret)
    assert enrolled["enrollAgent"]["host"]["hostname"] == "web-1.test"
    agent = enrolled["enrollAgent"]["agentToken"]
    assert (await gql.data("{ viewer { name role } }", token=agent))["viewer"] == {"name": "agent:web-1.test", "role": "AGENT"}

    listing = await gql.data("{ enrollmentTokens { totalCount edges { node { name usesLeft revokedAt } } } }")
    assert listing["enrollmentTokens"]["edges"][0]["node"] == {"name": "rollout", "usesLeft": 1, "revokedAt": None}
    revoked = await gql.data(
        "mutation($id: ID!) { revokeEnrollmentToken(id: $id) { revokedAt } }", {"id": created["enrollmentToken"]["id"]}
    )
    assert revoked["revokeEnrollmentToken"]["revokedAt"] == T0.isoformat()
    response = await gql.post(ENROLL, {"input": {"hostname": "web-2.test"}}, token=secret)
    assert response.status_code == 401
    assert await gql.error_codes(CREATE, {"input": {"name": "x"}}, token=agent) == ["FORBIDDEN"]


async def test_enrolling_a_host_again_revokes_its_earlier_agent_token(gql, at):
    first = await enroll(gql, "db-1.test")
    second = await enroll(gql, "db-1.test")
    assert (await gql.post("{ viewer { name } }", token=first)).status_code == 401
    result = await send(gql, second, document("db-1.test", [file_item(leaf("db.test"))]))
    assert result["accepted"] == 1


async def test_a_report_through_the_api(gql, at):
    agent = await enroll(gql, "web-1.test")
    der = leaf("shop.test", 10)
    doc = document("web-1.test", [file_item(der, "/etc/ssl/shop.pem"), {"kind": "FILE", "der": "%%%"}],
                   errors=[{"path": "/etc/ssl/key.pem", "reason": "permission denied"}], interval_seconds=900)  # fmt: skip
    result = await send(gql, agent, doc)
    assert result == {"accepted": 1, "newCertificates": 1, "eventsRecorded": 1, "stale": False,
                      "rejected": [{"index": 1, "reason": "der is not base64"}]}  # fmt: skip

    host = (await gql.data(HOST, {"hostname": "web-1.test"}))["host"]
    assert host["status"] == "ACTIVE" and host["worstStatus"] == "CRITICAL" and host["intervalSeconds"] == 900
    assert host["lastReportAt"] == T0.isoformat() and host["os"] == "TestOS" and host["agentVersion"] == "test"
    assert host["scanErrors"] == [{"path": "/etc/ssl/key.pem", "reason": "permission denied"}]
    assert host["certificates"]["edges"] == [{"node": {"commonName": "shop.test"}}]
    events = await gql.data("{ certificateEvents { edges { node { type actor host { hostname } location { path } } } } }")
    assert [e["node"] for e in events["certificateEvents"]["edges"]] == [
        {"type": "DISCOVERED", "actor": "agent:web-1.test", "host": {"hostname": "web-1.test"}, "location": {"path": "/etc/ssl/shop.pem"}}
    ]

    at(3 * 15 + 1)  # three intervals without a report
    assert (await gql.data(HOST, {"hostname": "web-1.test"}))["host"]["status"] == "STALE"


async def test_an_agent_reports_for_its_own_host_only_and_reads_nothing(gql, at):
    agent = await enroll(gql, "mine.test")
    await enroll(gql, "other.test")
    body = await gql.execute(REPORT, {"input": document("other.test", [file_item(leaf("x.test"))])}, token=agent)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await Certificate.all().count() == 0
    assert await gql.error_codes("{ hosts { totalCount } }", token=agent) == ["FORBIDDEN"]
    viewer = await gql.data(
        "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { token } }",
        {"input": {"name": "viewer", "role": "VIEWER"}},
    )
    secret = viewer["createApiToken"]["token"]
    assert await gql.error_codes(REPORT, {"input": document("mine.test", [])}, token=secret) == ["FORBIDDEN"]


async def test_replay_stale_and_parts_through_the_api(gql, at):
    agent = await enroll(gql, "web-1.test")
    a, b, c = leaf("a.test"), leaf("b.test"), leaf("c.test")
    first = document("web-1.test", [file_item(a, "/a.pem"), file_item(b, "/b.pem"), file_item(c, "/c.pem")], scan_id="s1")
    assert (await send(gql, agent, first))["eventsRecorded"] == 3

    at(1)  # the same part again, whenever it arrives
    replay = await send(gql, agent, first)
    assert (replay["accepted"], replay["newCertificates"], replay["eventsRecorded"], replay["stale"]) == (3, 0, 0, False)
    assert await CertificateEvent.all().count() == 3

    at(10)  # a complete scan in two parts: removal waits for the last part
    part0 = document("web-1.test", [file_item(a, "/a.pem")], scan_id="s2", part=0, last_part=False)
    part1 = document("web-1.test", [file_item(b, "/b.pem")], scan_id="s2", part=1, last_part=True,
                     scanned_at=clock.parse_instant(part0["scannedAt"]))  # fmt: skip
    assert (await send(gql, agent, part0))["eventsRecorded"] == 0
    assert await CertificateLocation.filter(removed_at__isnull=True).count() == 3
    at(11)
    assert (await send(gql, agent, part1))["eventsRecorded"] == 1
    assert {loc.path for loc in await CertificateLocation.filter(removed_at__isnull=True)} == {"/a.pem", "/b.pem"}

    at(12)  # a retried old scan must not undo the newer one
    old = document("web-1.test", [file_item(c, "/c.pem")], scan_id="s0", scanned_at=T0 + 5 * MINUTE)
    stale = await send(gql, agent, old)
    assert (stale["stale"], stale["accepted"], stale["eventsRecorded"]) == (True, 0, 0)
    assert await CertificateLocation.filter(removed_at__isnull=True).count() == 2


async def test_a_part_over_ten_thousand_items_is_refused_whole(gql, at):
    agent = await enroll(gql, "big.test")
    items = [{"kind": "FILE", "path": "/x.pem", "der": "AA=="}] * 10_001
    body = await gql.execute(REPORT, {"input": document("big.test", items)}, token=agent)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["TOO_LARGE"]
    assert await ScanPart.all().count() == 0 and await CertificateEvent.all().count() == 0


async def test_agents_may_send_large_bodies_up_to_their_own_limit(app_factory, gql, at):
    transport = httpx.ASGITransport(app=app_factory(agent_max_body_bytes=4 * 1024 * 1024))
    async with httpx.AsyncClient(transport=transport, base_url="http://ctops.test") as http:
        client = GraphQLClient(http)
        agent = await enroll(gql, "web-1.test")
        padding = {"kind": "FILE", "path": "/p" + "x" * 1000, "der": "AA=="}
        doc = document("web-1.test", [padding] * 3000)  # about 3 MiB: over everyone else's 2 MiB
        ok = await client.post(REPORT, {"input": doc}, token=agent)
        assert ok.status_code == 200 and ok.json()["data"]["reportCertificates"]["accepted"] == 0
        viewer = await client.post(REPORT, {"input": doc}, token=gql.token)
        assert viewer.status_code == 413 and viewer.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"
        too_big = await client.post(REPORT, {"input": document("web-1.test", [padding] * 5000)}, token=agent)
        assert too_big.status_code == 413 and too_big.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"


async def test_retiring_a_host_takes_its_certificates_out_of_the_current_set(gql, at):
    a, b = await enroll(gql, "a.test"), await enroll(gql, "b.test")
    only, shared = leaf("only.test"), leaf("shared.test")
    await send(gql, a, document("a.test", [file_item(only, "/only.pem"), file_item(shared, "/shared.pem")]))
    await send(gql, b, document("b.test", [file_item(shared, "/shared.pem")]))
    host_id = (await gql.data(HOST, {"hostname": "a.test"}))["host"]["id"]

    retired = await gql.data(RETIRE, {"id": host_id})
    assert retired["retireHost"] == {"hostname": "a.test", "status": "RETIRED", "retiredAt": T0.isoformat()}
    current = await gql.data("{ certificates { edges { node { commonName } } } }")
    assert [e["node"]["commonName"] for e in current["certificates"]["edges"]] == ["shared.test"]
    removed = await gql.data('{ certificateEvents(filter: {types: [REMOVED_FROM_HOST]}) { totalCount } }')
    assert removed["certificateEvents"]["totalCount"] == 2
    assert (await gql.post("{ viewer { name } }", token=a)).status_code == 401
    viewer = await gql.data(
        "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { token } }",
        {"input": {"name": "viewer", "role": "VIEWER"}},
    )
    assert await gql.error_codes(RETIRE, {"id": host_id}, token=viewer["createApiToken"]["token"]) == ["FORBIDDEN"]


async def test_an_unchanged_report_costs_the_same_statements_for_10_or_100_items(gql, at):
    agent = await enroll(gql, "web-1.test")
    ders = [leaf(f"s{i}.test") for i in range(100)]
    counts = {}
    for size in (10, 100):
        doc = document("web-1.test", [file_item(der, f"/etc/ssl/{i}.pem") for i, der in enumerate(ders[:size])])
        await send(gql, agent, doc)
        at(size)
        doc = document("web-1.test", [file_item(der, f"/etc/ssl/{i}.pem") for i, der in enumerate(ders[:size])])
        with count_statements() as statements:
            result = await send(gql, agent, doc)
        assert result["eventsRecorded"] == 0
        counts[size] = len(statements)
    assert counts[10] == counts[100] <= 8, counts


@postgres_only  # SQLite has one writer: there is no race to test
async def test_two_hosts_reporting_the_same_new_certificate_at_once_make_one(gql, database, at):
    agents = [await enroll(gql, f"race-{i}.test") for i in range(2)]
    ders = [leaf(f"race-{i}.test") for i in range(30)]
    docs = [
        document("race-0.test", [file_item(der, f"/{i}.pem") for i, der in enumerate(ders)]),
        document("race-1.test", [file_item(der, f"/{i}.pem") for i, der in enumerate(reversed(ders))]),
    ]
    results = await asyncio.gather(*(send(gql, agent, doc) for agent, doc in zip(agents, docs, strict=True)))
    assert sum(r["newCertificates"] for r in results) == 30 and all(r["accepted"] == 30 for r in results)
    assert await Certificate.all().count() == 30
    assert {c.live_locations for c in await Certificate.all()} == {2}
