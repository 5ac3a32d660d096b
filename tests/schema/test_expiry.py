"""Expiry in embedded mode, through a real `ctops serve` (SQLite, in-memory bus)
and the real `ctops sweep`: status changes pushed to `expiryStatusChanged`,
from `runSweep` (this server's bus) and from the CLI (the server's catch-up
tick), with a moved clock (CTOPS_CLOCK_OFFSET_SECONDS)."""

from __future__ import annotations

import datetime as dt

import httpx

from backend import clock, db
from backend.models import Role
from backend.schema.core.relay import to_global_id
from backend.services import tokens
from tests.certs import make_cert
from tests.support import inventory
from tests.support.live import live_client
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_port

DAY = 86400
STATUS = "subscription($f: ExpiryStatusChangeFilter) { expiryStatusChanged(filter: $f) { previousStatus status certificate { commonName } } }"


async def test_run_sweep_and_the_cli_push_status_changes_in_embedded_mode(tmp_path):
    env = ctops_env(
        CTOPS_DATA_DIR=str(tmp_path / "data"), CTOPS_SWEEP_TICK_SECONDS="3600", CTOPS_LIVE_CATCH_UP_TICK_SECONDS="0.5"
    )
    ctops("migrate", env=env)
    url = f"sqlite://{tmp_path / 'data' / 'ctops.sqlite3'}"
    await db.init(url)
    try:
        admin = (await tokens.create_token("admin", Role.ADMIN)).secret
        viewer = (await tokens.create_token("viewer", Role.VIEWER)).secret
        now = clock.now()

        def expiring(name: str, days: int) -> bytes:
            return make_cert(name, sans=(name,), not_before=now - dt.timedelta(days=100), not_after=now + dt.timedelta(days=days)).der

        port = free_port()
        # the server runs 10 days ahead; it sweeps once when it starts (nothing stored yet)
        with running(ctops_args("serve", "--port", str(port)), {**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(10 * DAY)}, tmp_path / "serve.log"):
            wait_for_port(port)
            await inventory.put(expiring("a.test", 35), hosts=("host-a.test",), path="/a.pem")  # OK when stored
            await inventory.put(expiring("b.test", 20), hosts=("host-b.test",), path="/b.pem")  # WARNING when stored
            host_a = await inventory.host("host-a.test")
            ws = f"ws://127.0.0.1:{port}/graphql"
            async with live_client(ws, viewer) as client:
                every = await client.subscribe(STATUS)
                on_a = await client.subscribe(STATUS, {"f": {"hostId": to_global_id("Host", host_a.id)}})
                expired = await client.subscribe(STATUS, {"f": {"statuses": ["EXPIRED"]}})
                await client.nothing(every, 0.3)

                # runSweep runs in the server, at its clock: a 25 days left, b 10 days left
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    body = (await http.post(
                        "/graphql", json={"query": "mutation { runSweep { statusChanges expired startedAt finishedAt } }"},
                        headers={"Authorization": f"Bearer {admin}"},
                    )).json()  # fmt: skip
                result = body["data"]["runSweep"]
                assert (result["statusChanges"], result["expired"]) == (2, 0)
                assert result["startedAt"] <= result["finishedAt"]
                pushed = {(await client.next(every))["expiryStatusChanged"]["certificate"]["commonName"] for _ in range(2)}
                assert pushed == {"a.test", "b.test"}
                change = (await client.next(on_a))["expiryStatusChanged"]
                assert change == {"previousStatus": "OK", "status": "WARNING", "certificate": {"commonName": "a.test"}}

                # `ctops sweep` in another process, 30 days ahead: no bus to the server,
                # the server's catch-up tick pushes what it recorded
                out = ctops("sweep", env={**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(30 * DAY)}).stdout.splitlines()
                assert out[0].startswith("STATUS_CHANGED") and "a.test  WARNING -> CRITICAL" in out[0]
                assert "b.test  CRITICAL -> EXPIRED" in out[1] and out[2].startswith("EXPIRED") and "b.test" in out[2]
                assert out[3].startswith("sweep: 2 status change(s), 1 expired")
                assert out[4].startswith("note: embedded mode")
                gone = (await client.next(expired, timeout=10))["expiryStatusChanged"]
                assert gone == {"previousStatus": "CRITICAL", "status": "EXPIRED", "certificate": {"commonName": "b.test"}}
                assert (await client.next(on_a, timeout=10))["expiryStatusChanged"]["status"] == "CRITICAL"
                assert len([await client.next(every) for _ in range(2)]) == 2
                await client.nothing(every, 1.0)

                # nothing left to record
                again = ctops("sweep", env={**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(30 * DAY)}).stdout.splitlines()
                assert again[0].startswith("sweep: 0 status change(s), 0 expired") and len(again) == 1
    finally:
        await db.close()
