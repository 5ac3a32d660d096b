"""The ctops-agent command, run for real as ``python -m agent.cli`` in a subprocess."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pty
import select
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent import __version__, report
from tests.agent.processes import PYTHON, ROOT, environment, run_cli
from tests.certs import make_chain, make_cert, pem_bundle, pkcs12_bundle

UTC = dt.timezone.utc
DOCUMENT_KEYS = {
    "scanId", "scannedAt", "complete", "part", "lastPart", "hostname", "agentVersion", "os", "intervalSeconds", "items",
    "errors",
}
REPORT_OK = {
    "data": {"reportCertificates": {"accepted": 3, "newCertificates": 3, "eventsRecorded": 3, "stale": False, "rejected": []}}
}


def graphql_error(message: str, code: str) -> dict:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


@pytest.fixture(scope="module")
def chain():
    return make_chain("cli.test")


@pytest.fixture
def tree(tmp_path: Path, chain):
    leaf, intermediate, root = chain
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "fullchain.pem").write_text(pem_bundle(leaf, intermediate))
    (certs / "app.p12").write_bytes(pkcs12_bundle(leaf, password=b"from-config"))
    (certs / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    (certs / "readme.txt").write_text("not a certificate\n")
    settings = tmp_path / "agent.toml"
    settings.write_text('hostname = "cli-host.test"\nkeystore_passwords = ["from-config"]\ninterval_seconds = 900\n')
    return certs, settings


def test_scan_json_prints_the_report_document(tree, chain, tls_server):
    leaf, intermediate, _ = chain
    certs, settings = tree
    server = tls_server([leaf, intermediate])
    result = run_cli("scan", "--json", "--config", str(settings), "--port", str(server.port), str(certs))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert set(document) == DOCUMENT_KEYS
    assert document["hostname"] == "cli-host.test"
    assert (document["intervalSeconds"], document["agentVersion"]) == (900, __version__)
    assert (document["complete"], document["part"], document["lastPart"]) == (True, 0, True)
    assert dt.datetime.fromisoformat(document["scannedAt"]).utcoffset() == dt.timedelta(0)
    located = [(i["kind"], i.get("path") or i.get("address"), i["index"], i["fingerprintSha256"]) for i in document["items"]]
    assert located == [
        ("FILE", str(certs / "app.p12"), 0, leaf.fingerprint),
        ("FILE", str(certs / "fullchain.pem"), 0, leaf.fingerprint),
        ("FILE", str(certs / "fullchain.pem"), 1, intermediate.fingerprint),
        ("PORT", "127.0.0.1", 0, leaf.fingerprint),
        ("PORT", "127.0.0.1", 1, intermediate.fingerprint),
    ]
    for item in document["items"]:
        assert base64.b64decode(item["der"], validate=True) in (leaf.der, intermediate.der)
        assert item["commonName"] in ("cli.test", "Test Intermediate CA")
        assert dt.datetime.fromisoformat(item["notAfter"]).tzinfo is not None
    port_item = document["items"][3]
    assert (port_item["port"], port_item["serverName"]) == (server.port, "cli-host.test")
    broken = "PEM block 1: not valid PEM (bad base64 or missing END line)"
    assert document["errors"] == [{"path": str(certs / "broken.pem"), "reason": broken}]


def test_scan_human_output_is_plain_when_redirected(tree, chain):
    certs, settings = tree
    result = run_cli("scan", "--config", str(settings), str(certs))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["LOCATION", "COMMON", "NAME", "ISSUER", "NOT", "AFTER", "DAYS"]
    assert any(line.startswith(f"{certs}/fullchain.pem #1 ") and "Test Intermediate CA" in line for line in lines)
    assert f"error: {certs}/broken.pem: PEM block 1" in result.stdout
    assert lines[-1] == "4 files read, 3 certificates found, 1 errors"
    assert "\x1b[" not in result.stdout and result.stderr == ""


def _run_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (exit code, all output)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [PYTHON, "-m", "agent.cli", *args],
        cwd=ROOT,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        code = process.wait(timeout=30)
    return code, output.decode()


def test_scan_on_a_terminal_colours_days_left_and_shows_progress(tmp_path: Path):
    root = make_cert("soon.test", days=5)
    later = make_cert("later.test", days=20)
    fine = make_cert("fine.test", days=200)
    for issued in (root, later, fine):
        (tmp_path / f"{issued.cert.subject.rfc4514_string()}.pem").write_text(issued.pem)
    code, output = _run_on_a_terminal("scan", str(tmp_path))
    assert code == 0
    assert "\rscanning: " in output and "\r\x1b[K" in output  # progress, then cleared
    assert "\x1b[31m3\x1b[0m" in output  # red: under 14 days (5 days from a day ago)
    assert "\x1b[33m18\x1b[0m" in output  # amber: under 30 days
    assert "\x1b[32m198\x1b[0m" in output  # green


def test_scan_of_a_missing_path_reports_incomplete(tmp_path: Path):
    result = run_cli("scan", "--json", str(tmp_path / "nope"))
    document = json.loads(result.stdout)
    assert document["complete"] is False
    assert document["errors"] == [{"path": str(tmp_path / "nope"), "reason": "no such file or directory"}]


def test_bad_configuration_exits_2(tmp_path: Path):
    settings = tmp_path / "agent.toml"
    settings.write_text("interval_seconds = 'soon'\n")
    result = run_cli("scan", "--config", str(settings), str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ctops-agent: {settings}: interval_seconds: expected int"


def test_enroll_writes_the_configuration(tmp_path: Path, graphql_server):
    enrolled = {"agentToken": "agent-secret-token", "host": {"id": "42", "hostname": "web01.test"}}
    server = graphql_server((200, {"data": {"enrollAgent": enrolled}}))
    path = tmp_path / "etc" / "ctops" / "agent.toml"
    result = run_cli(
        "enroll", "--server", server.url + "/", "--enrollment-token", "one-time",
        "--config", str(path), "--hostname", "web01.test",
    )
    assert result.returncode == 0, result.stderr
    assert "agent-secret-token" not in result.stdout + result.stderr
    assert result.stdout.strip() == f"enrolled web01.test (host 42); configuration written to {path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = tomllib.loads(path.read_text())
    assert written == {"server_url": server.url, "token": "agent-secret-token", "hostname": "web01.test"}
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer one-time"
    assert request.body["variables"]["input"]["hostname"] == "web01.test"
    assert request.body["variables"]["input"]["agentVersion"] == __version__
    assert request.body["variables"]["input"]["os"]


def test_enroll_refused(tmp_path: Path, graphql_server):
    server = graphql_server((401, graphql_error("enrollment token expired", "UNAUTHENTICATED")))
    path = tmp_path / "agent.toml"
    result = run_cli("enroll", "--server", server.url, "--enrollment-token", "one-time-XYZ", "--config", str(path))
    assert result.returncode == 1
    assert "enrollment failed: HTTP 401" in result.stderr and "enrollment token expired" in result.stderr
    assert "one-time-XYZ" not in result.stderr
    assert not path.exists()


def _enrolled(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'server_url = "{url}"\ntoken = "agent-secret-token"\nhostname = "run-host.test"\n'
        "retry_initial_seconds = 0.01\nretry_max_seconds = 0.02\nretry_attempts = 3\n" + extra
    )
    return path


def test_run_once_sends_the_report_without_annotations(tmp_path: Path, tree, chain, graphql_server):
    leaf, intermediate, _ = chain
    certs, _ = tree
    server = graphql_server((500, {"errors": [{"message": "database restarting"}]}), (200, REPORT_OK))
    settings = _enrolled(tmp_path, server.url, 'keystore_passwords = ["from-config"]\n')
    result = run_cli("run", "--once", "--config", str(settings), "--path", str(certs))
    assert result.returncode == 0, result.stderr
    assert "retrying in" in result.stderr and "reported 3 certificates" in result.stderr
    assert len(server.requests) == 2
    sent = server.requests[-1]
    assert sent.headers["authorization"] == "Bearer agent-secret-token"
    assert sent.body["query"] == (
        "mutation($input: ReportCertificatesInput!) { reportCertificates(input: $input) "
        "{ accepted newCertificates eventsRecorded stale rejected { index reason } } }"
    )
    document = sent.body["variables"]["input"]
    assert set(document) == DOCUMENT_KEYS
    assert document["hostname"] == "run-host.test"
    for item in document["items"]:
        assert not set(item) & set(report.ANNOTATIONS)
    assert [(i["path"], i["index"]) for i in document["items"]] == [
        (str(certs / "app.p12"), 0),
        (str(certs / "fullchain.pem"), 0),
        (str(certs / "fullchain.pem"), 1),
    ]
    assert base64.b64decode(document["items"][2]["der"]) == intermediate.der
    assert "agent-secret-token" not in result.stderr + result.stdout


def test_run_once_fails_with_the_reason_and_without_the_token(tmp_path: Path, graphql_server):
    server = graphql_server((401, graphql_error("bad token agent-secret-token", "UNAUTHENTICATED")))
    settings = _enrolled(tmp_path, server.url)
    result = run_cli("run", "--once", "--config", str(settings), "--path", str(tmp_path))
    assert result.returncode == 1
    assert "report failed: HTTP 401" in result.stderr
    assert "agent-secret-token" not in result.stderr + result.stdout
    assert len(server.requests) == 1  # a refused token is not retried


def test_run_needs_an_enrolled_configuration(tmp_path: Path):
    settings = tmp_path / "agent.toml"
    settings.write_text('hostname = "x"\n')
    result = run_cli("run", "--once", "--config", str(settings))
    assert result.returncode == 2
    assert "not enrolled" in result.stderr
    missing = run_cli("run", "--once", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
