"""The outbound policy and the one connect function, against real sockets on loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import pytest

from backend import endpoints, outbound, tls
from backend.errors import CheckErrorCode, CheckFailed
from tests.support.checker import StaticResolver, make_pki
from tests.support.tls_servers import TLSServer


@contextlib.contextmanager
def listener(host: str = "127.0.0.1"):
    """A listening socket whose accept queue tells whether anyone connected."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connections_seen(sock: socket.socket) -> int:
    seen = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return seen
        conn.close()
        seen += 1


# --- the policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "denied"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.2", "link-local"),
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", None),
        ("172.16.5.4", None),
        ("192.168.1.1", None),
        ("100.64.0.1", None),
        ("fd12:3456::1", None),
        ("93.184.216.34", None),
    ],
)
def test_default_policy(address, denied):
    reason = outbound.Policy().address_denial("example.test", ipaddress.ip_address(address))
    if denied is None:
        assert reason is None
    else:
        assert reason is not None and denied in reason


def test_rules_parse_cidrs_and_host_names():
    policy = outbound.Policy.parse(["10.0.0.0/8", "exact.test", "*.sub.test", ".both.test"], [])
    assert [r.network for r in policy.allow][0] == ipaddress.ip_network("10.0.0.0/8")
    assert policy.name_allowed("exact.test") and not policy.name_allowed("a.exact.test")
    assert policy.name_allowed("a.sub.test") and not policy.name_allowed("sub.test")
    assert policy.name_allowed("both.test") and policy.name_allowed("x.y.both.test")
    assert policy.name_allowed("EXACT.test".lower())
    with pytest.raises(ValueError, match="neither a CIDR nor a host name"):
        outbound.Policy.parse(["not a rule!"], [])


def test_allow_beats_deny_and_private_ranges_can_be_denied():
    policy = outbound.Policy.parse(["127.0.0.1/32", "ok.test"], ["127.0.0.0/8", "10.0.0.0/8", "ok.test"])
    assert policy.address_denial("x.test", ipaddress.ip_address("127.0.0.1")) is None
    assert "CTOPS_OUTBOUND_DENY" in policy.address_denial("x.test", ipaddress.ip_address("127.0.0.2"))
    assert "CTOPS_OUTBOUND_DENY" in policy.address_denial("x.test", ipaddress.ip_address("10.1.1.1"))
    # A host name on the allow list wins over its addresses' denials and over a deny rule naming it.
    assert policy.name_denial("ok.test") is None
    assert policy.address_denial("ok.test", ipaddress.ip_address("169.254.169.254")) is None


# --- connecting ----------------------------------------------------------------------------


async def test_metadata_address_is_denied_before_any_connection_attempt():
    with listener() as sock:
        port = sock.getsockname()[1]
        resolver = StaticResolver({"meta.test": ["169.254.169.254", "127.0.0.1"]})
        policy = outbound.Policy.parse(["127.0.0.0/8"], [])  # loopback allowed: only the metadata address is denied
        with pytest.raises(CheckFailed) as caught:
            await outbound.connect("meta.test", port, policy=policy, timeout=2, resolver=resolver)
        assert caught.value.check_code is CheckErrorCode.OUTBOUND_DENIED
        assert "169.254.169.254" in str(caught.value) and "metadata" in str(caught.value)
        assert resolver.calls == ["meta.test"]
        assert connections_seen(sock) == 0  # one denied address refuses the whole name, before connecting

        for literal in ("169.254.169.254", "[fd00:ec2::254]"):
            with pytest.raises(CheckFailed) as caught:
                await outbound.connect(literal, port, policy=policy, timeout=2, resolver=resolver)
            assert caught.value.check_code is CheckErrorCode.OUTBOUND_DENIED
        resolver6 = StaticResolver({"meta6.test": ["fd00:ec2::254"]})
        with pytest.raises(CheckFailed, match="metadata"):
            await outbound.connect("meta6.test", port, policy=policy, timeout=2, resolver=resolver6)
        assert connections_seen(sock) == 0


async def test_loopback_is_denied_unless_allowed():
    with listener() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(CheckFailed) as caught:
            await outbound.connect("127.0.0.1", port, policy=outbound.Policy(), timeout=2)
        assert caught.value.check_code is CheckErrorCode.OUTBOUND_DENIED
        assert "loopback" in str(caught.value)
        resolver = StaticResolver({"localhost.test": ["127.0.0.1"]})
        with pytest.raises(CheckFailed, match="localhost.test resolves to 127.0.0.1, a loopback address"):
            await outbound.connect("localhost.test", port, policy=outbound.Policy(), timeout=2, resolver=resolver)
        assert connections_seen(sock) == 0

        connection = await outbound.connect("127.0.0.1", port, policy=outbound.Policy.parse(["127.0.0.1"], []), timeout=2)
        connection.abort()
        assert connections_seen(sock) == 1


async def test_allow_beats_deny_on_real_connections():
    with listener("127.0.0.1") as sock:
        port = sock.getsockname()[1]
        policy = outbound.Policy.parse(["127.0.0.1/32"], ["127.0.0.0/8"])
        (await outbound.connect("127.0.0.1", port, policy=policy, timeout=2)).abort()
        assert connections_seen(sock) == 1
        with pytest.raises(CheckFailed, match="CTOPS_OUTBOUND_DENY"):
            await outbound.connect("127.0.0.2", port, policy=policy, timeout=2)
        by_name = outbound.Policy.parse(["pinned.test"], ["127.0.0.0/8"])
        resolver = StaticResolver({"pinned.test": ["127.0.0.1"]})
        (await outbound.connect("pinned.test", port, policy=by_name, timeout=2, resolver=resolver)).abort()
        assert connections_seen(sock) == 1


async def test_a_denied_name_is_refused_before_any_lookup():
    resolver = StaticResolver({"blocked.test": ["10.0.0.1"]})
    policy = outbound.Policy.parse([], ["blocked.test"])
    with pytest.raises(CheckFailed, match="blocked.test is denied"):
        await outbound.connect("blocked.test", 443, policy=policy, timeout=2, resolver=resolver)
    assert resolver.calls == []


async def test_the_resolved_address_is_the_one_connected_to_and_sni_keeps_the_name(tmp_path):
    pki = make_pki(tmp_path)
    # A server on 127.0.0.3 only: the connection must go to exactly the resolved address.
    with TLSServer(pki.chain("pinned.test"), host="127.0.0.3") as server:
        resolver = StaticResolver({"pinned.test": ["127.0.0.3"]})
        policy = outbound.Policy.parse(["127.0.0.0/8"], [])
        fetched = await tls.fetch(
            endpoints.parse(f"https://pinned.test:{server.port}"), policy=policy, timeout=2, resolver=resolver
        )
        assert fetched.address == "127.0.0.3"
        assert resolver.calls == ["pinned.test"]  # one lookup, no second one when connecting
        assert server.seen_names == ["pinned.test"]  # SNI carries the name, not the address
        # The same name resolved elsewhere reaches nothing: nothing else is tried.
        elsewhere = StaticResolver({"pinned.test": ["127.0.0.4"]})
        with pytest.raises(CheckFailed) as caught:
            await tls.fetch(endpoints.parse(f"https://pinned.test:{server.port}"), policy=policy, timeout=2, resolver=elsewhere)
        assert caught.value.check_code is CheckErrorCode.CONNECTION_REFUSED
        assert server.total == 1


async def test_invalid_names_never_reach_a_resolver():
    def must_not_be_called(host, port):
        raise AssertionError("resolver called")

    for name in ("nothing.invalid", "a.b.invalid.", "invalid"):
        with pytest.raises(CheckFailed) as caught:
            await outbound.connect(name, 443, policy=outbound.Policy(), timeout=2, resolver=must_not_be_called)
        assert caught.value.check_code is CheckErrorCode.DNS_FAILED


async def test_a_name_that_does_not_resolve_is_dns_failed():
    with pytest.raises(CheckFailed) as caught:
        await outbound.connect("missing.test", 443, policy=outbound.Policy(), timeout=2, resolver=StaticResolver())
    assert caught.value.check_code is CheckErrorCode.DNS_FAILED


async def test_resolver_override_applies_to_every_connection():
    with listener() as sock:
        port = sock.getsockname()[1]
        resolver = StaticResolver({"override.test": ["127.0.0.1"]})
        with outbound.resolver_override(resolver):
            (await outbound.connect("override.test", port, policy=outbound.Policy.parse(["127.0.0.1"], []), timeout=2)).abort()
        assert resolver.calls == ["override.test"]
        assert connections_seen(sock) == 1


async def test_a_malformed_host_is_an_invalid_url():
    with pytest.raises(CheckFailed) as caught:
        await outbound.connect("bad host!", 443, policy=outbound.Policy(), timeout=2)
    assert caught.value.check_code is CheckErrorCode.INVALID_URL
