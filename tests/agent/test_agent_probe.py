"""agent.probe: /proc/net/tcp, and real TLS servers on 127.0.0.1 and ::1."""

from __future__ import annotations

import socket
import ssl
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from agent import probe
from agent.findings import ScanError
from tests.certs import make_chain

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 6761 1 0000000000000000 100 0 0 10 0
   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 92 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000   106        0 0 1 0000000000000000 100 0 0 10 0
   3: 0202000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 93 1 0000000000000000 100 0 0 10 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1111 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 5853 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5235 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5236 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5237 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000001000000:C350 00000000000000000000000001000000:1111 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
"""


@pytest.fixture(scope="module")
def chain():
    leaf, intermediate, _ = make_chain("probe.test")
    return leaf, intermediate


@pytest.mark.skipif(sys.byteorder != "little", reason="sample /proc text is from a little-endian host")
def test_parse_proc_net_tcp_listening_sockets_only_with_wildcards_on_loopback():
    assert probe.parse_proc_net_tcp(PROC_NET_TCP) == [
        probe.Listener("127.0.0.1", 8080),
        probe.Listener("127.0.0.1", 443),  # 0.0.0.0
        probe.Listener("10.0.2.2", 22),
    ]
    assert probe.parse_proc_net_tcp(PROC_NET_TCP6) == [
        probe.Listener("::1", 0x1111),
        probe.Listener("::1", 443),  # ::
        probe.Listener("127.0.0.1", 80),  # ::ffff:127.0.0.1
        probe.Listener("2001:db8::1", 8443),
    ]


def test_listening_reads_this_hosts_sockets(tls_server, chain, tmp_path):
    leaf, intermediate = chain
    v4 = tls_server([leaf, intermediate], "127.0.0.1")
    v6 = tls_server([leaf, intermediate], "::1")
    found = probe.listening()
    assert probe.Listener("127.0.0.1", v4.port) in found
    assert probe.Listener("::1", v6.port) in found
    assert found == sorted(set(found))
    assert probe.listening([str(tmp_path / "missing")]) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_probe_reports_the_served_chain_leaf_first(tls_server, chain, host):
    leaf, intermediate = chain
    server = tls_server([leaf, intermediate], host)
    result = probe.probe_ports([server.port], hostname="probe.test", timeout=3)
    assert result.errors == []
    found = [(c.address, c.port, c.server_name, c.index, c.der) for c in result.certificates]
    assert found == [
        (host, server.port, "probe.test", 0, leaf.der),
        (host, server.port, "probe.test", 1, intermediate.der),
    ]
    assert server.server_names == ["probe.test"]  # SNI is the host name


def test_port_bound_on_both_families_is_probed_on_each(tls_server, chain):
    leaf, intermediate = chain
    v4 = tls_server([leaf], "127.0.0.1")
    listeners = [probe.Listener("127.0.0.1", v4.port)]
    v6 = tls_server([leaf, intermediate], "::1")
    listeners.append(probe.Listener("::1", v6.port))
    result = probe.probe_ports([v4.port, v6.port], hostname="h.test", listeners=listeners)
    assert sorted((c.address, c.index) for c in result.certificates) == [("127.0.0.1", 0), ("::1", 0), ("::1", 1)]


def test_served_chain_uses_the_private_method_on_python_before_3_13(tls_server, chain):
    leaf, intermediate = chain
    server = tls_server([leaf, intermediate])
    context = probe.client_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as raw:
        with context.wrap_socket(raw, server_hostname="x.test") as tls:
            assert probe.served_chain(tls) == [leaf.der, intermediate.der]

            class LeafOnly:  # a socket that exposes no chain method at all
                def getpeercert(self, binary_form=False):
                    return tls.getpeercert(binary_form=binary_form)

            assert probe.served_chain(LeafOnly()) == [leaf.der]

            class Public:  # Python 3.13+: the public method, DER bytes
                def get_unverified_chain(self):
                    return [leaf.der, intermediate.der]

            assert probe.served_chain(Public()) == [leaf.der, intermediate.der]


def test_served_chain_of_an_sslobject(chain, tmp_path):
    """asyncio's SSLObject (used by the server's endpoint checks): a real handshake through memory BIOs."""
    leaf, intermediate = chain
    (tmp_path / "chain.pem").write_text(leaf.pem + intermediate.pem)
    (tmp_path / "key.pem").write_bytes(
        leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = probe.client_context().wrap_bio(pipes[0], pipes[1], server_hostname="obj.test")
    server = server_context.wrap_bio(pipes[2], pipes[3], server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):  # a handful of round trips completes any handshake
        for name, side, outgoing, incoming in (("client", client, pipes[1], pipes[2]), ("server", server, pipes[3], pipes[0])):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert probe.served_chain(client) == [leaf.der, intermediate.der]


def test_non_tls_port_is_skipped_silently_in_auto_mode(plain_server, tls_server, chain):
    leaf, _ = chain
    plain = plain_server()
    tls = tls_server([leaf])
    listeners = [probe.Listener("127.0.0.1", plain.port), probe.Listener("127.0.0.1", tls.port)]
    result = probe.probe_ports("auto", hostname="h.test", timeout=3, listeners=listeners)
    assert [(c.port, c.der) for c in result.certificates] == [(tls.port, leaf.der)]
    assert result.errors == [] and result.complete is True


def test_asked_ports_that_fail_are_errors(plain_server):
    plain = plain_server()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    listeners = [probe.Listener("127.0.0.1", plain.port)]
    result = probe.probe_ports([plain.port, free_port], hostname="h.test", timeout=3, listeners=listeners)
    assert result.certificates == []
    assert result.errors[0] == ScanError(f"port {free_port}", "nothing listens on this port")
    assert result.errors[1].path == f"127.0.0.1:{plain.port}"
    assert result.errors[1].reason.startswith("TLS handshake failed")
    assert result.complete is False  # the port listens: its certificate may still be there
    gone = probe.probe_ports([free_port], hostname="h.test", timeout=3, listeners=listeners)
    assert gone.complete is True  # nothing listens: the certificate is gone, not missed


def test_silent_server_times_out(tmp_path):
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen(1)
    try:
        port = quiet.getsockname()[1]
        result = probe.probe_ports([port], hostname=None, timeout=0.3, listeners=[probe.Listener("127.0.0.1", port)])
        assert result.errors == [ScanError(f"127.0.0.1:{port}", "timed out")]
    finally:
        quiet.close()


def test_sni_name():
    assert probe.sni_name("web01.example.com.") == "web01.example.com"
    assert probe.sni_name("10.0.0.1") is None
    assert probe.sni_name("::1") is None
    assert probe.sni_name("") is None


def test_client_context_accepts_anything():
    context = probe.client_context()
    assert context.verify_mode == ssl.CERT_NONE and context.check_hostname is False
