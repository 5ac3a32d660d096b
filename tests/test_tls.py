"""Fetching served chains from real servers on loopback: implicit TLS, STARTTLS
(SMTP via aiosmtpd, IMAP, POP3, LDAP, a throwaway PostgreSQL), and every way a
fetch fails. Chains are judged in ``tests/services/test_checker.py``."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import pytest

from backend import endpoints, outbound, tls, x509
from backend.errors import CheckErrorCode, CheckFailed
from tests.certs import make_ca
from tests.support.checker import LOOPBACK, make_pki
from tests.support.processes import free_port
from tests.support.tls_servers import StartTLSServer, TLSServer, server_context, silent_port

POLICY = outbound.Policy.parse(LOOPBACK, [])


async def fetch(url: str, server_name: str | None = None, timeout: float = 2) -> tls.Fetched:
    return await tls.fetch(endpoints.parse(url, server_name), policy=POLICY, timeout=timeout)


async def failure(url: str, server_name: str | None = None, timeout: float = 2) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        await fetch(url, server_name, timeout)
    return caught.value


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def fingerprints(fetched: tls.Fetched) -> list[str]:
    return [x509.fingerprint(der) for der in fetched.chain]


async def test_implicit_tls_reads_the_chain_as_served(pki):
    chain = pki.chain("shop.test")
    with TLSServer(chain) as server:
        fetched = await fetch(f"https://127.0.0.1:{server.port}", "shop.test")
    assert fingerprints(fetched) == [c.fingerprint for c in chain]
    assert fetched.tls_version == "TLSv1.3"
    assert fetched.cipher.startswith("TLS_")
    assert fetched.address == "127.0.0.1"
    assert server.seen_names == ["shop.test"]


async def test_tls12_cipher_is_reported_by_its_iana_name(pki):
    with TLSServer(pki.chain("old.test")) as server:
        context = server._context
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        fetched = await fetch(f"https://127.0.0.1:{server.port}", "old.test")
    assert fetched.tls_version == "TLSv1.2"
    assert fetched.cipher.startswith("TLS_ECDHE_ECDSA_WITH_"), fetched.cipher


async def test_sni_chooses_between_two_certificates(pki):
    a, b = pki.chain("a.test"), pki.chain("b.test")
    with TLSServer(a, by_name={"b.test": b}) as server:
        got_b = await fetch(f"https://127.0.0.1:{server.port}", "b.test")
        got_a = await fetch(f"https://127.0.0.1:{server.port}", "a.test")
        got_none = await fetch(f"https://127.0.0.1:{server.port}")
    assert fingerprints(got_b)[0] == b[0].fingerprint
    assert fingerprints(got_a)[0] == a[0].fingerprint
    assert fingerprints(got_none)[0] == a[0].fingerprint
    assert server.seen_names == ["b.test", "a.test", None]  # an IP literal sends no SNI


async def test_ipv6_loopback(pki):
    with TLSServer(pki.chain("six.test"), host="::1") as server:
        fetched = await fetch(f"https://[::1]:{server.port}", "six.test")
    assert fetched.address == "::1"


async def test_more_than_ten_certificates_is_too_large(pki):
    extra = [make_ca(f"Filler CA {i}") for i in range(10)]
    with TLSServer([pki.leaf("big.test"), *extra]) as server:
        error = await failure(f"https://127.0.0.1:{server.port}", "big.test")
    assert error.check_code is CheckErrorCode.TOO_LARGE


# --- STARTTLS -----------------------------------------------------------------------------


async def test_smtp_starttls_with_aiosmtpd(pki, tmp_path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    chain = pki.chain("mail.test")
    port = free_port()
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=port, tls_context=server_context(chain, tmp_path), require_starttls=False
    )
    controller.start()
    try:
        fetched = await fetch(f"smtp://127.0.0.1:{port}", "mail.test")
    finally:
        controller.stop()
    assert fingerprints(fetched) == [c.fingerprint for c in chain]


async def test_smtp_without_starttls_is_not_supported():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        error = await failure(f"smtp://127.0.0.1:{port}")
    finally:
        controller.stop()
    assert error.check_code is CheckErrorCode.STARTTLS_NOT_SUPPORTED
    assert "does not offer STARTTLS" in str(error)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "ldap"])
async def test_starttls_dialogues(pki, protocol):
    chain = pki.chain(f"{protocol}.test")
    with StartTLSServer(protocol, chain) as server:
        fetched = await fetch(f"{protocol}://127.0.0.1:{server.port}", f"{protocol}.test")
    assert fingerprints(fetched) == [c.fingerprint for c in chain]
    with StartTLSServer(protocol, chain, offer=False) as server:
        error = await failure(f"{protocol}://127.0.0.1:{server.port}")
    assert error.check_code is CheckErrorCode.STARTTLS_NOT_SUPPORTED


async def test_postgres_sslrequest_on_a_throwaway_cluster(pki):
    from tests.support.postgres_tls import postgres_bin, throwaway_postgres

    assert postgres_bin() is not None, "PostgreSQL server binaries (initdb) are missing: .ci/run installs them"
    chain = pki.chain("db.test")
    with throwaway_postgres(chain) as port:
        fetched = await fetch(f"postgres://127.0.0.1:{port}", "db.test", timeout=5)
    assert fingerprints(fetched) == [c.fingerprint for c in chain]


async def test_postgres_with_ssl_off_is_starttls_not_supported():
    """The system PostgreSQL on 5432 (the test database server) runs with ``ssl = off``;
    should a machine's have TLS on, a throwaway cluster with ``ssl = off`` stands in."""
    import asyncpg

    from tests.support.databases import pg_base_url
    from tests.support.postgres_tls import throwaway_postgres

    base = urlsplit(pg_base_url())
    conn = await asyncpg.connect(pg_base_url().replace("postgres://", "postgresql://", 1), ssl=False)
    try:
        system_ssl = await conn.fetchval("SHOW ssl")
    finally:
        await conn.close()
    if system_ssl == "off" and base.hostname in ("127.0.0.1", "localhost"):
        port = base.port or 5432
        error = await failure(f"postgresql://127.0.0.1:{port}/test")
    else:
        with throwaway_postgres(None) as port:
            error = await failure(f"postgres://127.0.0.1:{port}", timeout=5)
    assert error.check_code is CheckErrorCode.STARTTLS_NOT_SUPPORTED
    assert "ssl = off" in str(error)


# --- failures -----------------------------------------------------------------------------


async def test_a_port_that_refuses():
    error = await failure(f"https://127.0.0.1:{free_port()}")
    assert error.check_code is CheckErrorCode.CONNECTION_REFUSED


async def test_a_server_that_never_answers_times_out():
    with silent_port() as port:
        started = time.monotonic()
        error = await failure(f"https://127.0.0.1:{port}", timeout=1)
        elapsed = time.monotonic() - started
    assert error.check_code is CheckErrorCode.TIMEOUT
    assert 0.9 <= elapsed < 3


async def test_starttls_on_a_silent_server_times_out():
    with silent_port() as port:
        error = await failure(f"smtp://127.0.0.1:{port}", timeout=1)
    assert error.check_code is CheckErrorCode.TIMEOUT


async def test_an_unresolvable_name():
    error = await failure("https://nothing-here.invalid")
    assert error.check_code is CheckErrorCode.DNS_FAILED


async def test_a_server_that_does_not_speak_tls():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def answer() -> None:
        conn, _ = sock.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        error = await failure(f"https://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        thread.join(timeout=5)
        sock.close()
    assert error.check_code is CheckErrorCode.TLS_HANDSHAKE_FAILED


async def test_the_policy_applies_to_fetches():
    with pytest.raises(CheckFailed) as caught:
        await tls.fetch(endpoints.parse("https://127.0.0.1:443"), policy=outbound.Policy(), timeout=2)
    assert caught.value.check_code is CheckErrorCode.OUTBOUND_DENIED
