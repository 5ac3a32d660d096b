"""trackUrl, importCertificate, refreshTrackedSource, untrackSource and the
trackedSources queries through the real HTTP stack (SQLite and PostgreSQL)."""

from __future__ import annotations

import httpx
import pytest

from backend.models import Role
from tests.support.checker import LOOPBACK, make_pki
from tests.support.graphql import GraphQLClient
from tests.support.processes import free_port
from tests.support.tls_servers import TLSServer

SOURCE = """
id kind url serverName name note refreshInterval certificate { fingerprintSha256 isCurrent: status }
warnings { code message } lastRefreshedAt lastAttemptAt nextRefreshAt lastError lastErrorCode
consecutiveFailures createdAt untrackedAt history(first: 10) { totalCount edges { node { fingerprintSha256 } } }
"""
TRACK = f"""mutation($input: TrackUrlInput!) {{
  trackUrl(input: $input) {{ alreadyTracked certificate {{ fingerprintSha256 }} trackedSource {{ {SOURCE} }} }}
}}"""
IMPORT = f"""mutation($input: ImportCertificateInput!) {{
  importCertificate(input: $input) {{ certificate {{ fingerprintSha256 renewedFrom {{ fingerprintSha256 }} }}
                                      trackedSource {{ {SOURCE} }} }}
}}"""
REFRESH = f"mutation($id: ID!) {{ refreshTrackedSource(id: $id) {{ {SOURCE} }} }}"
UNTRACK = f"mutation($id: ID!) {{ untrackSource(id: $id) {{ {SOURCE} }} }}"
LIST = """query($filter: TrackedSourceFilter, $first: Int, $after: String) {
  trackedSources(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id kind url consecutiveFailures untrackedAt } }
  }
}"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def client(app_factory, admin_token, pki):
    app = app_factory(outbound_allow=LOOPBACK, ca_bundle=str(pki.ca_file), tls_timeout_seconds=1.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctops.test") as http:
        yield GraphQLClient(http, admin_token)


async def test_track_refresh_and_untrack_a_url(client, pki):
    chain = pki.chain("shop.test")
    with TLSServer(chain) as server:
        url = f"https://127.0.0.1:{server.port}/status"
        payload = (await client.data(TRACK, {"input": {
            "url": url, "serverName": "shop.test", "refreshInterval": "MINUTES_15", "name": "Shop", "note": "prod",
        }}))["trackUrl"]  # fmt: skip
        source = payload["trackedSource"]
        assert payload["alreadyTracked"] is False
        assert payload["certificate"]["fingerprintSha256"] == chain[0].fingerprint
        assert (source["kind"], source["url"], source["serverName"]) == ("URL", url, "shop.test")
        assert (source["name"], source["note"], source["refreshInterval"]) == ("Shop", "prod", "MINUTES_15")
        assert (source["lastError"], source["lastErrorCode"], source["consecutiveFailures"]) == (None, None, 0)
        assert source["warnings"] == [] and source["untrackedAt"] is None and source["nextRefreshAt"]
        assert source["history"]["totalCount"] == 1

        again = (await client.data(TRACK, {"input": {"url": f"127.0.0.1:{server.port}", "serverName": "SHOP.TEST"}}))["trackUrl"]
        assert again["alreadyTracked"] is True and again["trackedSource"]["id"] == source["id"]
        assert again["trackedSource"]["refreshInterval"] == "MINUTES_15"  # unchanged by the second call

        renewed = pki.chain("shop.test", days=200)
        server.serve(renewed)
        refreshed = (await client.data(REFRESH, {"id": source["id"]}))["refreshTrackedSource"]
        assert refreshed["certificate"]["fingerprintSha256"] == renewed[0].fingerprint
        assert [e["node"]["fingerprintSha256"] for e in refreshed["history"]["edges"]] == [
            renewed[0].fingerprint, chain[0].fingerprint,
        ]  # fmt: skip

    # The server is gone: the refresh answers, the failure is in lastError.
    failed = await client.execute(REFRESH, {"id": source["id"]})
    assert not failed.get("errors")
    failed = failed["data"]["refreshTrackedSource"]
    assert failed["lastErrorCode"] == "CONNECTION_REFUSED" and failed["consecutiveFailures"] == 1
    assert failed["certificate"]["fingerprintSha256"] == renewed[0].fingerprint
    listed = (await client.data(LIST, {"filter": {"failing": True}}))["trackedSources"]
    assert [e["node"]["id"] for e in listed["edges"]] == [source["id"]]

    events = (await client.data(
        """query($id: ID!) { certificateEvents(filter: { trackedSourceId: $id }) {
             edges { node { type actor details trackedSource { id } certificate { fingerprintSha256 } } } } }""",
        {"id": source["id"]},
    ))["certificateEvents"]["edges"]  # fmt: skip
    assert [e["node"]["type"] for e in events] == ["REFRESH_FAILED", "RENEWED", "IMPORTED"]
    assert {e["node"]["trackedSource"]["id"] for e in events} == {source["id"]}
    assert events[0]["node"]["details"]["code"] == "CONNECTION_REFUSED"
    assert events[1]["node"]["actor"] == "admin"

    untracked = (await client.data(UNTRACK, {"id": source["id"]}))["untrackSource"]
    assert untracked["untrackedAt"] and untracked["nextRefreshAt"] is None
    assert (await client.data(LIST))["trackedSources"]["totalCount"] == 0
    assert (await client.data(LIST, {"filter": {"includeUntracked": True}}))["trackedSources"]["totalCount"] == 1
    current = await client.data("{ certificates { totalCount } }")
    assert current["certificates"]["totalCount"] == 0
    assert await client.error_codes(REFRESH, {"id": source["id"]}) == ["BAD_USER_INPUT"]


async def test_a_failed_first_track_is_a_typed_error_and_stores_nothing(client):
    assert await client.error_codes(TRACK, {"input": {"url": f"https://127.0.0.1:{free_port()}"}}) == ["CONNECTION_REFUSED"]
    assert await client.error_codes(TRACK, {"input": {"url": "gopher://old.test"}}) == ["INVALID_URL"]
    assert (await client.data(LIST, {"filter": {"includeUntracked": True}}))["trackedSources"]["totalCount"] == 0


async def test_import_and_reimport(client, pki):
    old = pki.leaf("vpn.test", days=60)
    first = (await client.data(IMPORT, {"input": {"data": old.pem, "name": "VPN", "note": "edge"}}))["importCertificate"]
    source = first["trackedSource"]
    assert (source["kind"], source["url"], source["refreshInterval"], source["nextRefreshAt"]) == ("UPLOAD", None, None, None)
    assert [w["code"] for w in source["warnings"]] == ["INCOMPLETE_CHAIN"]
    new = pki.leaf("vpn.test", days=120)
    second = (await client.data(IMPORT, {"input": {"data": new.pem + pki.intermediate.pem, "trackedSourceId": source["id"]}}))
    second = second["importCertificate"]
    assert second["certificate"]["renewedFrom"]["fingerprintSha256"] == old.fingerprint
    assert second["trackedSource"]["id"] == source["id"] and second["trackedSource"]["warnings"] == []
    assert second["trackedSource"]["history"]["totalCount"] == 2
    assert await client.error_codes(IMPORT, {"input": {"data": new.pem, "trackedSourceId": "bm9wZTox"}}) == ["BAD_USER_INPUT"]
    stats = await client.data("{ certificates(filter: { source: IMPORTED }) { totalCount } }")
    assert stats["certificates"]["totalCount"] == 1


async def test_lookups_and_permissions(client, make_token, pki):
    source = (await client.data(IMPORT, {"input": {"data": pki.leaf("a.test").pem}}))["importCertificate"]["trackedSource"]
    one = await client.data("query($id: ID!) { trackedSource(id: $id) { id kind } node(id: $id) { id } }", {"id": source["id"]})
    assert one["trackedSource"] == {"id": source["id"], "kind": "UPLOAD"} and one["node"]["id"] == source["id"]
    missing = await client.data('{ trackedSource(id: "VHJhY2tlZFNvdXJjZTo5OTk") { id } }')
    assert missing["trackedSource"] is None
    viewer = await make_token(Role.VIEWER)
    assert (await client.data(LIST, token=viewer))["trackedSources"]["totalCount"] == 1
    for mutation, variables in ((IMPORT, {"input": {"data": "x"}}), (UNTRACK, {"id": source["id"]}), (REFRESH, {"id": source["id"]})):
        assert await client.error_codes(mutation, variables, token=viewer) == ["FORBIDDEN"]
    assert await client.error_codes(UNTRACK, {"id": "VHJhY2tlZFNvdXJjZTo5OTk"}) == ["NOT_FOUND"]
    editor = await make_token(Role.EDITOR)
    assert not (await client.execute(UNTRACK, {"id": source["id"]}, token=editor)).get("errors")


async def test_paging_and_kind_filter(client, pki):
    ids = []
    for i in range(3):
        payload = await client.data(IMPORT, {"input": {"data": pki.leaf(f"p{i}.test").pem}})
        ids.append(payload["importCertificate"]["trackedSource"]["id"])
    page = (await client.data(LIST, {"first": 2}))["trackedSources"]
    assert [e["node"]["id"] for e in page["edges"]] == ids[:2] and page["pageInfo"]["hasNextPage"]
    rest = (await client.data(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]}))["trackedSources"]
    assert [e["node"]["id"] for e in rest["edges"]] == ids[2:]
    assert (await client.data(LIST, {"filter": {"kind": "URL"}}))["trackedSources"]["totalCount"] == 0
