"""docs/live.md's client example is the file docs/examples/follow_events.py, and
it works against a real server."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from backend import clock, db
from backend.db import transaction
from backend.models import EventType, Role
from backend.services import events, tokens
from tests.certs import make_cert
from tests.support import inventory
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "follow_events.py"


def test_live_md_shows_the_example_file_as_it_is():
    text = (ROOT / "docs" / "live.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert EXAMPLE.read_text() in blocks


async def test_the_example_follows_events_from_a_real_server(tmp_path):
    env = ctops_env(CTOPS_DATA_DIR=str(tmp_path / "data"), CTOPS_LIVE_CATCH_UP_TICK_SECONDS="0.3", CTOPS_SWEEP_TICK_SECONDS="3600")
    ctops("migrate", env=env)
    await db.init(f"sqlite://{tmp_path / 'data' / 'ctops.sqlite3'}")
    try:
        viewer = (await tokens.create_token("dashboard", Role.VIEWER)).secret
        cert = await inventory.put(make_cert("example.test", sans=("example.test",)).der, hosts=("web-7.test",))
        port = free_port()
        url = f"ws://127.0.0.1:{port}/graphql"
        with running(ctops_args("serve", "--port", str(port)), env, tmp_path / "serve.log"):
            wait_for_port(port)
            refused = subprocess.run([sys.executable, str(EXAMPLE), url, "wrong-token"], capture_output=True, text=True, timeout=30)
            assert refused.returncode != 0 and "refused the token" in refused.stderr

            follower = subprocess.Popen(
                [sys.executable, str(EXAMPLE), url, viewer, "--types", "RESTORED", "--max-events", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                time.sleep(1.5)  # connected and subscribed
                host = await inventory.host("web-7.test")
                for _ in range(3):  # the second of the three is not a RESTORED
                    async with transaction() as conn:
                        await events.record(conn, [events.NewEvent(EventType.RESTORED, cert.id, host_id=host.id)], actor="t", now=clock.now())
                    async with transaction() as conn:
                        await events.record(conn, [events.NewEvent(EventType.DISCOVERED, cert.id, host_id=host.id)], actor="t", now=clock.now())
                    await asyncio.sleep(0.1)
                out, err = follower.communicate(timeout=30)
            finally:
                if follower.poll() is None:
                    follower.kill()
        assert follower.returncode == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 2, out
        assert all("RESTORED" in line and "example.test  web-7.test  OK" in line for line in lines), out
    finally:
        await db.close()
