"""The inventory through the real HTTP stack: filters, statuses, pages, stats, lookups."""

from __future__ import annotations

import datetime as dt

import pytest

from backend import clock
from tests import certs
from tests.support import inventory
from tests.support.statements import count_statements

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.fixture
def frozen():
    clock.freeze(NOW)
    yield NOW
    clock.freeze(None)


def leaf(name: str, not_after: dt.datetime, **kw) -> bytes:
    return certs.make_cert(name, sans=(name,), not_before=not_after - 200 * DAY, not_after=not_after, **kw).der


LIST = """
query($filter: CertificateFilter, $first: Int, $after: String, $order: CertificateOrder) {
  certificates(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id commonName status daysRemaining notAfter } }
  }
}
"""


async def names(gql, **variables) -> list[str]:
    data = await gql.data(LIST, variables)
    return [e["node"]["commonName"] for e in data["certificates"]["edges"]]


async def test_status_boundaries_through_the_api(gql, frozen):
    await inventory.put(leaf("ok-30.test", NOW + 30 * DAY), hosts=("a",))
    await inventory.put(leaf("warn-29.test", NOW + 30 * DAY - dt.timedelta(seconds=1)), hosts=("a",))
    await inventory.put(leaf("warn-14.test", NOW + 14 * DAY), hosts=("a",))
    await inventory.put(leaf("crit-13.test", NOW + 14 * DAY - dt.timedelta(seconds=1)), hosts=("a",))
    await inventory.put(leaf("expired-now.test", NOW), hosts=("a",))
    await inventory.put(leaf("expired-1s.test", NOW - dt.timedelta(seconds=1)), hosts=("a",))

    data = await gql.data(LIST, {"first": 10})
    got = {e["node"]["commonName"]: (e["node"]["status"], e["node"]["daysRemaining"]) for e in data["certificates"]["edges"]}
    assert got == {
        "ok-30.test": ("OK", 30),
        "warn-29.test": ("WARNING", 29),
        "warn-14.test": ("WARNING", 14),
        "crit-13.test": ("CRITICAL", 13),
        "expired-now.test": ("EXPIRED", 0),
        "expired-1s.test": ("EXPIRED", -1),
    }
    assert await names(gql, filter={"statuses": ["WARNING"]}) == ["warn-14.test", "warn-29.test"]
    assert await names(gql, filter={"statuses": ["CRITICAL", "EXPIRED"]}) == [
        "expired-1s.test", "expired-now.test", "crit-13.test"]
    assert await names(gql, filter={"expiresWithinDays": 14}) == ["crit-13.test", "warn-14.test"]
    stats = (await gql.data("{ certificateStats { total ok warning critical expired } }"))["certificateStats"]
    assert stats == {"total": 6, "ok": 1, "warning": 2, "critical": 1, "expired": 2}
    stats = (await gql.data("query($f: CertificateFilter) { certificateStats(filter: $f) { total warning critical } }",
                            {"f": {"statuses": ["WARNING", "CRITICAL"]}}))["certificateStats"]
    assert stats == {"total": 3, "warning": 2, "critical": 1}


async def test_keyset_pages_are_stable_across_inserts(gql, frozen):
    for i in range(7):
        await inventory.put(leaf(f"c{i}.test", NOW + (40 + i) * DAY), hosts=("a",))
    page1 = (await gql.data(LIST, {"first": 3}))["certificates"]
    assert [e["node"]["commonName"] for e in page1["edges"]] == ["c0.test", "c1.test", "c2.test"]
    assert page1["pageInfo"]["hasNextPage"] is True
    assert page1["totalCount"] == 7
    # A certificate inserted before the cursor, and one after it, while the client pages.
    await inventory.put(leaf("early.test", NOW + 35 * DAY), hosts=("a",))
    await inventory.put(leaf("late.test", NOW + 100 * DAY), hosts=("a",))
    after = page1["pageInfo"]["endCursor"]
    page2 = (await gql.data(LIST, {"first": 3, "after": after}))["certificates"]
    assert [e["node"]["commonName"] for e in page2["edges"]] == ["c3.test", "c4.test", "c5.test"]
    page3 = (await gql.data(LIST, {"first": 3, "after": page2["pageInfo"]["endCursor"]}))["certificates"]
    assert [e["node"]["commonName"] for e in page3["edges"]] == ["c6.test", "late.test"]
    assert page3["pageInfo"]["hasNextPage"] is False


async def test_equal_sort_keys_page_by_id(gql, frozen):
    same = NOW + 50 * DAY
    for i in range(5):
        await inventory.put(leaf(f"same{i}.test", same), hosts=("a",))
    seen = []
    after = None
    for _ in range(5):
        page = (await gql.data(LIST, {"first": 2, "after": after}))["certificates"]
        seen += [e["node"]["commonName"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert sorted(seen) == [f"same{i}.test" for i in range(5)]
    assert len(seen) == 5


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("NOT_AFTER_ASC", ["b.test", "a.test", "c.test"]),
        ("NOT_AFTER_DESC", ["c.test", "a.test", "b.test"]),
        ("COMMON_NAME_ASC", ["a.test", "b.test", "c.test"]),
        ("LAST_SEEN_DESC", ["b.test", "c.test", "a.test"]),
    ],
)
async def test_orders(gql, frozen, order, expected):
    await inventory.put(leaf("a.test", NOW + 60 * DAY), hosts=("h",), last_seen_at=NOW - 3 * DAY)
    await inventory.put(leaf("b.test", NOW + 40 * DAY), hosts=("h",), last_seen_at=NOW - 1 * DAY)
    await inventory.put(leaf("c.test", NOW + 90 * DAY), hosts=("h",), last_seen_at=NOW - 2 * DAY)
    assert await names(gql, order=order) == expected
    # and paging through with first: 1 gives the same order
    seen, after = [], None
    for _ in range(4):
        page = (await gql.data(LIST, {"first": 1, "after": after, "order": order}))["certificates"]
        seen += [e["node"]["commonName"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    assert seen == expected


async def test_filters(gql, frozen):
    ca = certs.make_ca("Filter Root CA", not_after=NOW + 3000 * DAY, not_before=NOW - DAY)
    await inventory.put(ca.der, hosts=("h1",), path="/etc/ssl/ca.pem")
    issued = certs.make_cert("Shop.Example.test", sans=("shop.example.test", "www.example.test"), issuer=ca,
                             not_before=NOW - DAY, not_after=NOW + 200 * DAY)
    await inventory.put(issued.der, hosts=("h1", "h2"))
    selfsigned = await inventory.put(leaf("self.test", NOW + 100 * DAY), hosts=("h2",))
    gone = await inventory.put(leaf("gone.test", NOW + 100 * DAY), hosts=("h3",), removed=True)
    assert gone.is_current is False

    assert await names(gql, filter={"search": "WWW.EXAMPLE"}) == ["Shop.Example.test"]
    assert await names(gql, filter={"search": "filter root"}) == ["Shop.Example.test", "Filter Root CA"]
    assert await names(gql, filter={"isCa": True}) == ["Filter Root CA"]
    assert set(await names(gql, filter={"selfSigned": True})) == {"Filter Root CA", "self.test"}
    assert "gone.test" not in await names(gql)
    assert "gone.test" in await names(gql, filter={"includeHistory": True})
    hosts = (await gql.data('{ hosts { edges { node { id hostname } } } }'))["hosts"]["edges"]
    h2 = next(h["node"]["id"] for h in hosts if h["node"]["hostname"] == "h2")
    assert await names(gql, filter={"hostId": h2}) == ["self.test", "Shop.Example.test"]
    assert await names(gql, filter={"source": "AGENT"}) == ["self.test", "Shop.Example.test", "Filter Root CA"]
    assert await names(gql, filter={"source": "IMPORTED"}) == []
    assert selfsigned.is_current


async def test_certificate_lookup_and_fields(gql, frozen):
    ca = certs.make_ca("Lookup Root", not_before=NOW - DAY, not_after=NOW + 3000 * DAY)
    issued = certs.make_cert("lookup.test", sans=("lookup.test",), ip_sans=("10.0.0.1",), issuer=ca,
                             not_before=NOW - DAY, not_after=NOW + 20 * DAY, key_kind="rsa")
    await inventory.put(ca.der, hosts=("h",), path="/etc/ssl/ca.pem")
    stored = await inventory.put(issued.der, hosts=("h",))
    fp = stored.fingerprint_sha256
    colons = ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
    query = """query($fp: String, $id: ID) { certificate(fingerprintSha256: $fp, id: $id) {
        id fingerprintSha256 commonName status daysRemaining keyAlgorithm keySize sans { type value }
        issuerCertificate { commonName } selfSigned isCa pem hostCount locationCount
        locations { kind path host { hostname } } hosts { hostname } lastEvent { type actor }
        events { totalCount edges { node { type host { hostname } } } } } }"""
    cert = (await gql.data(query, {"fp": colons}))["certificate"]
    assert cert["fingerprintSha256"] == fp
    assert cert["status"] == "WARNING" and cert["daysRemaining"] == 20
    assert (cert["keyAlgorithm"], cert["keySize"]) == ("RSA", 2048)
    assert {"type": "IP", "value": "10.0.0.1"} in cert["sans"]
    assert cert["issuerCertificate"] == {"commonName": "Lookup Root"}
    assert cert["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert cert["hostCount"] == 1 and cert["locationCount"] == 1
    assert cert["locations"] == [{"kind": "FILE", "path": "/etc/ssl/site.pem", "host": {"hostname": "h"}}]
    assert cert["lastEvent"] == {"type": "DISCOVERED", "actor": "test"}
    assert cert["events"]["totalCount"] == 1
    by_id = (await gql.data(query, {"id": cert["id"]}))["certificate"]
    assert by_id["fingerprintSha256"] == fp
    node = (await gql.data("query($id: ID!) { node(id: $id) { id ... on Certificate { commonName } } }", {"id": cert["id"]}))
    assert node["node"]["commonName"] == "lookup.test"
    assert (await gql.data(query, {"fp": "00" * 32}))["certificate"] is None
    assert await gql.error_codes(query, {}) == ["BAD_USER_INPUT"]
    assert await gql.error_codes(query, {"fp": fp, "id": cert["id"]}) == ["BAD_USER_INPUT"]


async def test_first_is_bounded_and_cursors_checked(gql):
    assert await gql.error_codes(LIST, {"first": 501}) == ["BAD_USER_INPUT"]
    assert await gql.error_codes(LIST, {"first": -1}) == ["BAD_USER_INPUT"]
    assert await gql.error_codes(LIST, {"after": "not-a-cursor"}) == ["BAD_USER_INPUT"]
    data = await gql.data(LIST, {"first": 500})
    assert data["certificates"]["edges"] == []


DASHBOARD = """
query($filter: CertificateFilter) {
  certificates(first: 50, filter: $filter) {
    edges { node { id commonName status daysRemaining
      hosts { id hostname worstStatus } locations { id kind path host { id hostname } }
      lastEvent { type occurredAt } renewedFrom { id } renewedBy { id } issuerCertificate { id } } }
  }
  certificateStats(filter: $filter) { total ok warning critical expired }
}
"""


async def test_nested_fields_cost_a_constant_number_of_statements(gql, frozen):
    async def statements_for(n_certs: int) -> int:
        await gql.data("{ viewer { name } }")  # the token's lastUsedAt is written on first use only
        with count_statements() as statements:
            data = await gql.data(DASHBOARD, {"filter": {}})
        assert len(data["certificates"]["edges"]) == n_certs
        return len(statements)

    ca = certs.make_ca("Count CA", not_before=NOW - DAY, not_after=NOW + 3000 * DAY)
    for i in range(3):
        await inventory.put(certs.make_cert(f"n{i}.test", issuer=ca, not_before=NOW - DAY,
                                            not_after=NOW + (20 + i) * DAY).der, hosts=(f"h{i}", "shared"))
    few = await statements_for(3)
    for i in range(3, 50):
        await inventory.put(certs.make_cert(f"n{i}.test", issuer=ca, not_before=NOW - DAY,
                                            not_after=NOW + (20 + i) * DAY).der, hosts=(f"h{i}", "shared", f"x{i}"))
    many = await statements_for(50)
    assert many == few, f"{few} statements for 3 certificates but {many} for 50"
    assert many <= 16
