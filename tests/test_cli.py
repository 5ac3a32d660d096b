"""The `ctops` command, run as a real process."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_output, wait_for_port


@pytest.fixture
def sqlite_env(tmp_path):
    return ctops_env(CTOPS_DATA_DIR=str(tmp_path / "data"))


def test_token_create_list_revoke(sqlite_env):
    ctops("migrate", env=sqlite_env)
    created = ctops("token", "create", "--name", "ci", "--role", "VIEWER", env=sqlite_env)
    secret = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ctops_[A-Za-z0-9_-]{43}", secret)
    listing = ctops("token", "list", env=sqlite_env).stdout
    assert "ci" in listing and "VIEWER" in listing and secret not in listing
    # names are unique; errors are one clear line and exit 2
    dup = ctops("token", "create", "--name", "ci", "--role", "VIEWER", env=sqlite_env, check=False)
    assert dup.returncode == 2 and "exists already" in dup.stderr and "Traceback" not in dup.stderr
    # AGENT tokens need a host
    agent = ctops("token", "create", "--name", "a", "--role", "AGENT", env=sqlite_env, check=False)
    assert agent.returncode == 2 and "--host" in agent.stderr
    ctops("token", "revoke", "ci", env=sqlite_env)
    assert re.search(r"^ci\s.*\d{4}-\d\d-\d\dT\S+\s*$", ctops("token", "list", env=sqlite_env).stdout, re.M)
    missing = ctops("token", "revoke", "nobody", env=sqlite_env, check=False)
    assert missing.returncode == 2


def test_serve_embedded_prints_url_and_admin_token_and_answers(tmp_path, sqlite_env):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**sqlite_env, "CTOPS_HEARTBEAT_TICK_SECONDS": "1"}
    with running(ctops_args("serve", "--port", str(port)), env, log):
        wait_for_port(port)
        output = log.read_text()
        assert f"http://127.0.0.1:{port}/graphql" in output
        token = wait_for_output(log, r"admin token: (\S+)").group(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            body = http.post("/graphql", json={"query": "{ viewer { name role } }"},
                             headers={"Authorization": f"Bearer {token}"}).json()
            assert body["data"]["viewer"] == {"name": "admin", "role": "ADMIN"}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                ready = http.get("/readyz")
                if ready.status_code == 200:
                    break
                time.sleep(0.3)
            assert ready.status_code == 200, ready.text
            assert ready.json()["mode"] == "embedded" and ready.json()["heartbeat"]["component"] == "embedded"
    # a second start on the same database prints no new token
    with running(ctops_args("serve", "--port", str(port)), env, log):
        wait_for_port(port)
        assert "admin token:" not in log.read_text()


def test_clock_offset_is_announced(tmp_path, sqlite_env):
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**sqlite_env, "CTOPS_FAKE_NOW": "2030-01-01T00:00:00Z"}
    with running(ctops_args("serve", "--port", str(port)), env, log):
        wait_for_port(port)
        assert "Clock shifted" in log.read_text()
        clock = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["clock"]
        assert clock["shifted"] is True and clock["now"].startswith("2030-01-01")


def test_export_schema_prints_sdl(sqlite_env):
    out = ctops("export-schema", env=sqlite_env).stdout
    assert "type Query" in out and "certificates(" in out


@pytest.fixture
async def pg_url():
    url = await create_pg_database("ctops_cli")
    yield url
    await drop_pg_database(url)


def test_production_mode_worker_heartbeat_shows_in_readyz(tmp_path, pg_url, redis_url):
    env = ctops_env(
        DATABASE_URL=pg_url, REDIS_URL=redis_url, CTOPS_HEARTBEAT_TICK_SECONDS="1",
        CTOPS_DATA_DIR=str(tmp_path / "data"),
    )
    ctops("migrate", env=env)
    port = free_port()
    with running(ctops_args("serve", "--port", str(port)), env, tmp_path / "serve.log"):
        wait_for_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            before = http.get("/readyz")
            assert before.status_code == 503 and before.json()["heartbeat"]["ok"] is False
            assert before.json()["redis"]["ok"] is True and before.json()["mode"] == "production"
            with running(ctops_args("worker"), env, tmp_path / "worker.log"):
                deadline = time.monotonic() + 30
                ready = before
                while time.monotonic() < deadline:
                    ready = http.get("/readyz")
                    if ready.status_code == 200:
                        break
                    time.sleep(0.5)
                assert ready.status_code == 200, ready.text + (tmp_path / "worker.log").read_text()
                first = ready.json()["heartbeat"]["lastBeatAt"]
                time.sleep(2.5)
                assert http.get("/readyz").json()["heartbeat"]["lastBeatAt"] > first  # it keeps beating


def test_seed_demo_adds_certificates(tmp_path, sqlite_env):
    out = ctops("seed-demo", "--certificates", "40", env=sqlite_env).stdout
    assert "seeded 40 certificates" in out
    out = ctops("seed-demo", "--certificates", "10", env=sqlite_env).stdout
    assert "seeded 10 certificates" in out
