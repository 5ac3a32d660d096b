"""The real agent CLI against a real server process: enrol, report, and the
inventory's timeline as files are renewed, deleted and put back."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import httpx
import pytest

from tests import certs
from tests.support.processes import ROOT, ctops, ctops_args, ctops_env, free_port, running, wait_for_output, wait_for_port

DAY = dt.timedelta(days=1)
HOSTNAME = "e2e-agent.test"


def agent(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def server(tmp_path):
    env = ctops_env(CTOPS_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    log = tmp_path / "serve.log"
    with running(ctops_args("serve", "--port", str(port)), env, log):
        wait_for_port(port)
        admin = wait_for_output(log, r"admin token: (\S+)").group(1)
        yield {"url": f"http://127.0.0.1:{port}", "admin": admin, "env": env}


def test_enrol_report_renew_remove_restore(tmp_path, server):
    url, env = server["url"], server["env"]
    enrolment = ctops("enrollment-token", "create", "--name", "e2e", env=env).stdout.strip().splitlines()[-1]
    config = tmp_path / "agent.toml"
    enrolled = agent("enroll", "--server", url, "--enrollment-token", enrolment, "--config", str(config),
                     "--hostname", HOSTNAME, env=env)
    assert enrolled.returncode == 0, enrolled.stderr
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert enrolment not in config.read_text()

    ssl_dir = tmp_path / "etc-ssl"
    ssl_dir.mkdir()
    now = dt.datetime.now(dt.timezone.utc)
    ca = certs.make_ca("E2E Root", not_before=now - DAY, not_after=now + 3000 * DAY)
    shop = certs.make_cert("shop.e2e.test", sans=("shop.e2e.test",), issuer=ca, not_before=now - DAY, not_after=now + 40 * DAY)
    api = certs.make_cert("api.e2e.test", sans=("api.e2e.test",), issuer=ca, not_before=now - DAY, not_after=now + 20 * DAY)
    (ssl_dir / "shop.pem").write_text(shop.pem)
    (ssl_dir / "api.pem").write_bytes(api.der)

    def run_once(*paths) -> None:
        result = agent("run", "--once", "--config", str(config), *(a for p in paths for a in ("--path", str(p))), env=env)
        assert result.returncode == 0, result.stdout + result.stderr

    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {server['admin']}"}, timeout=20)

    def gql(query: str, variables: dict | None = None) -> dict:
        body = http.post("/graphql", json={"query": query, "variables": variables or {}}).json()
        assert not body.get("errors"), body
        return body["data"]

    def timeline(name: str) -> list[str]:
        data = gql("""query($q: String) { certificates(filter: {search: $q, includeHistory: true}) {
            edges { node { events { edges { node { type } } } } } } }""", {"q": name})
        return [e["node"]["type"] for c in data["certificates"]["edges"] for e in c["node"]["events"]["edges"]]

    run_once(ssl_dir)
    listing = gql("""{ certificates { edges { node { commonName status
        locations { path host { hostname } } } } } }""")["certificates"]["edges"]
    places = {c["node"]["commonName"]: c["node"]["locations"] for c in listing}
    assert places["shop.e2e.test"] == [{"path": str(ssl_dir / "shop.pem"), "host": {"hostname": HOSTNAME}}]
    assert places["api.e2e.test"] == [{"path": str(ssl_dir / "api.pem"), "host": {"hostname": HOSTNAME}}]
    assert timeline("shop.e2e.test") == ["DISCOVERED"]

    # the file is replaced by a renewed certificate (same name, later expiry)
    renewed = certs.make_cert("shop.e2e.test", sans=("shop.e2e.test",), issuer=ca, not_before=now, not_after=now + 120 * DAY)
    (ssl_dir / "shop.pem").write_text(renewed.pem)
    run_once(ssl_dir)
    current = gql("""query($fp: String) { certificate(fingerprintSha256: $fp) {
        daysRemaining renewedFrom { fingerprintSha256 } lastEvent { type details } } }""",
                  {"fp": renewed.fingerprint})["certificate"]
    assert current["lastEvent"]["type"] == "RENEWED"
    assert current["renewedFrom"]["fingerprintSha256"] == shop.fingerprint
    assert current["lastEvent"]["details"]["previousFingerprint"] == shop.fingerprint

    # a file is deleted: a partial scan (one configured path missing) removes nothing...
    (ssl_dir / "api.pem").unlink()
    run_once(ssl_dir, tmp_path / "not-mounted")
    assert "REMOVED_FROM_HOST" not in timeline("api.e2e.test")
    # ...a complete one does
    run_once(ssl_dir)
    assert timeline("api.e2e.test")[0] == "REMOVED_FROM_HOST"
    gone = gql('{ certificates(filter: {search: "api.e2e.test"}) { totalCount } }')
    assert gone["certificates"]["totalCount"] == 0

    # put back: RESTORED, current again
    (ssl_dir / "api.pem").write_bytes(api.der)
    run_once(ssl_dir)
    assert timeline("api.e2e.test") == ["RESTORED", "REMOVED_FROM_HOST", "DISCOVERED"]
    back = gql('{ certificates(filter: {search: "api.e2e.test"}) { totalCount } }')
    assert back["certificates"]["totalCount"] == 1
    http.close()
