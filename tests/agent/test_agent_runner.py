"""agent.runner: report_once and the run loop, against a scripted server."""

from __future__ import annotations

import random
from pathlib import Path

from agent import runner
from agent.config import Config
from tests.certs import make_cert

OK = {
    "data": {"reportCertificates": {"accepted": 1, "newCertificates": 0, "eventsRecorded": 0, "stale": False, "rejected": []}}
}


def settings(url: str, **values) -> Config:
    base = dict(
        server_url=url,
        token="t",
        hostname="loop.test",
        default_paths=False,
        retry_initial_seconds=0.01,
        retry_max_seconds=0.01,
        retry_attempts=2,
    )
    base.update(values)
    return Config(**base)


def test_run_loop_keeps_going_after_a_failed_report(tmp_path: Path, graphql_server):
    (tmp_path / "c.pem").write_text(make_cert("runner.test").pem)
    server = graphql_server((400, {"errors": [{"message": "bad"}]}), (200, OK))
    slept: list[float] = []
    runner.run_forever(
        settings(server.url, paths=[str(tmp_path)], interval_seconds=100),
        sleep=slept.append,
        rng=random.Random(5),
        cycles=3,
    )
    assert len(server.requests) == 3  # the 400 was not retried, the loop went on
    scan_ids = {r.body["variables"]["input"]["scanId"] for r in server.requests}
    assert len(scan_ids) == 3  # each scan has its own id
    assert len(slept) == 2 and all(90 <= s <= 110 for s in slept) and slept[0] != slept[1]


def test_rejected_items_are_logged_with_their_location(tmp_path: Path, graphql_server, caplog):
    (tmp_path / "c.pem").write_text(make_cert("runner.test").pem)
    answer = {"accepted": 0, "newCertificates": 0, "eventsRecorded": 0, "stale": True, "rejected": [{"index": 0, "reason": "duplicate place"}]}
    server = graphql_server((200, {"data": {"reportCertificates": answer}}))
    with caplog.at_level("INFO", logger="ctops.agent"):
        runner.report_once(settings(server.url, paths=[str(tmp_path)]))
    messages = [r.getMessage() for r in caplog.records]
    assert f"server rejected {tmp_path}/c.pem (index 0): duplicate place" in messages
    assert "the server has a newer scan of this host; part 0 changed nothing" in messages
    assert any(m.startswith("reported 1 certificates from 1 files (0 errors, 1 parts): 0 accepted, 1 rejected") for m in messages)
