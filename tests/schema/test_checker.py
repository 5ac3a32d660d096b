"""inspectUrl and inspectCertificate through the real HTTP stack (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest

from backend.models import Role
from backend.services import rate_limits
from tests.certs import pkcs12_bundle
from tests.support.checker import LOOPBACK, make_pki
from tests.support.graphql import GraphQLClient
from tests.support.processes import free_port
from tests.support.tls_servers import TLSServer

DETAILS = """
fingerprintSha256 commonName subject issuer notBefore notAfter sans { type value } keyAlgorithm keySize
signatureAlgorithm isCa selfSigned status daysRemaining pem inventory { id fingerprintSha256 }
"""
RESULT = f"""
leaf {{ {DETAILS} }} chain {{ fingerprintSha256 commonName }} chainTrusted chainComplete hostnameMatches
tlsVersion cipher warnings {{ code message }} fetchedAt alreadyTrackedAs {{ id url }}
"""
INSPECT_URL = f"query($url: String!, $name: String) {{ inspectUrl(url: $url, serverName: $name) {{ {RESULT} }} }}"
INSPECT_DATA = f"query($data: String!, $password: String) {{ inspectCertificate(data: $data, password: $password) {{ {RESULT} }} }}"
TRACK = """mutation($input: TrackUrlInput!) { trackUrl(input: $input) { alreadyTracked trackedSource { id } } }"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def client(app_factory, admin_token, pki):
    app = app_factory(outbound_allow=LOOPBACK, ca_bundle=str(pki.ca_file), tls_timeout_seconds=1.0, inspect_rate="4/min")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctops.test") as http:
        yield GraphQLClient(http, admin_token)


async def test_inspect_url(client, pki):
    chain = pki.chain("shop.test")
    with TLSServer(chain) as server:
        url = f"https://127.0.0.1:{server.port}"
        result = (await client.data(INSPECT_URL, {"url": url, "name": "shop.test"}))["inspectUrl"]
        assert result["leaf"]["fingerprintSha256"] == chain[0].fingerprint
        assert result["leaf"]["commonName"] == "shop.test" and result["leaf"]["status"] == "OK"
        assert result["leaf"]["sans"] == [{"type": "DNS", "value": "shop.test"}]
        assert result["leaf"]["pem"].startswith("-----BEGIN CERTIFICATE-----")
        assert result["leaf"]["inventory"] is None  # nothing stored by an inspection
        assert [c["fingerprintSha256"] for c in result["chain"]] == [c.fingerprint for c in chain]
        assert (result["chainTrusted"], result["chainComplete"], result["hostnameMatches"]) == (True, True, True)
        assert result["tlsVersion"] == "TLSv1.3" and result["cipher"].startswith("TLS_")
        assert result["warnings"] == [] and result["fetchedAt"] and result["alreadyTrackedAs"] is None

        tracked = (await client.data(TRACK, {"input": {"url": url, "serverName": "shop.test"}}))["trackUrl"]
        again = (await client.data(INSPECT_URL, {"url": url, "name": "SHOP.test"}))["inspectUrl"]
    assert again["alreadyTrackedAs"]["id"] == tracked["trackedSource"]["id"]
    assert again["leaf"]["inventory"]["fingerprintSha256"] == chain[0].fingerprint


async def test_inspect_url_failures_are_typed(client):
    cases = [
        (f"https://127.0.0.1:{free_port()}", "CONNECTION_REFUSED"),
        ("ftp://files.test", "INVALID_URL"),
        ("https://169.254.169.254/latest/meta-data", "OUTBOUND_DENIED"),
        ("https://nothing.invalid", "DNS_FAILED"),
    ]
    for url, code in cases:
        body = await client.execute(INSPECT_URL, {"url": url})
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == [code], body


async def test_inspect_certificate(client, pki):
    leaf = pki.leaf("upload.test")
    result = (await client.data(INSPECT_DATA, {"data": leaf.pem + pki.intermediate.pem}))["inspectCertificate"]
    assert result["leaf"]["fingerprintSha256"] == leaf.fingerprint
    assert result["chainTrusted"] is True and result["chainComplete"] is True
    assert (result["hostnameMatches"], result["tlsVersion"], result["cipher"], result["fetchedAt"]) == (None,) * 4

    p12 = base64.b64encode(pkcs12_bundle(leaf, pki.intermediate, password=b"pw")).decode()
    ok = (await client.data(INSPECT_DATA, {"data": p12, "password": "pw"}))["inspectCertificate"]
    assert [c["commonName"] for c in ok["chain"]] == ["upload.test", "Checker Test Intermediate CA"]
    assert await client.error_codes(INSPECT_DATA, {"data": p12, "password": "nope"}) == ["BAD_PASSWORD"]
    assert await client.error_codes(INSPECT_DATA, {"data": "garbage!"}) == ["INVALID_CERTIFICATE"]
    two = pki.leaf("a.test").pem + pki.leaf("b.test").pem
    assert await client.error_codes(INSPECT_DATA, {"data": two}) == ["BAD_USER_INPUT"]
    huge = base64.b64encode(b"\x30" * (1024 * 1024 + 10)).decode()
    assert await client.error_codes(INSPECT_DATA, {"data": huge}) == ["TOO_LARGE"]


async def test_a_viewer_may_inspect_but_not_track(client, make_token, pki):
    viewer = await make_token(Role.VIEWER)
    ok = await client.execute(INSPECT_DATA, {"data": pki.leaf("v.test").pem}, token=viewer)
    assert not ok.get("errors")
    assert await client.error_codes(TRACK, {"input": {"url": "https://x.test"}}, token=viewer) == ["FORBIDDEN"]


async def test_inspect_url_is_rate_limited_per_token(client, make_token):
    url = {"url": f"https://127.0.0.1:{free_port()}"}
    for _ in range(4):
        assert await client.error_codes(INSPECT_URL, url) == ["CONNECTION_REFUSED"]
    body = await client.execute(INSPECT_URL, url)
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= body["errors"][0]["extensions"]["retryAfterSeconds"] <= 60
    other = await make_token(Role.VIEWER)
    assert await client.error_codes(INSPECT_URL, url, token=other) == ["CONNECTION_REFUSED"]
    # inspectCertificate is not limited.
    assert await client.error_codes(INSPECT_DATA, {"data": "garbage!"}) == ["INVALID_CERTIFICATE"]


async def test_the_redis_window_is_shared_by_replicas(redis_url):
    """Two API processes = two clients of the same Redis: they count the same calls."""
    replica_a, replica_b = rate_limits.RedisWindow(redis_url), rate_limits.RedisWindow(redis_url)
    rate = rate_limits.Rate(3, 60)
    key = f"ctops:rate:test:{time.time_ns()}"
    now = time.time()
    assert await replica_a.hit(key, rate, now) is None
    assert await replica_b.hit(key, rate, now + 0.1) is None
    assert await replica_a.hit(key, rate, now + 0.2) is None
    wait = await replica_b.hit(key, rate, now + 0.3)
    assert wait is not None and 59 < wait <= 60
    assert await replica_a.hit(key, rate, now + 60.05) is None  # the first call left the window
    for window in (replica_a, replica_b):
        await window.client.aclose()


async def test_rate_parsing_and_the_memory_window():
    assert rate_limits.Rate.parse("60/min") == rate_limits.Rate(60, 60)
    assert rate_limits.Rate.parse("2/s") == rate_limits.Rate(2, 1)
    assert rate_limits.Rate.parse("100 / h") == rate_limits.Rate(100, 3600)
    assert rate_limits.Rate.parse("off") is None
    with pytest.raises(ValueError):
        rate_limits.Rate.parse("lots")
    window = rate_limits.MemoryWindow()
    rate = rate_limits.Rate(2, 10)
    assert [await window.hit("k", rate, t) for t in (0, 1, 2)] == [None, None, 10 - 2]
    assert await window.hit("k", rate, 10.5) is None
    await asyncio.sleep(0)
