"""HTTP behaviour of the app: limits, error masking, request ids, CORS, health."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from backend.models import Role
from backend.services import inventory


async def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctops.test")


async def test_every_response_carries_a_request_id(http, gql):
    response = await gql.post("{ viewer { name } }")
    assert len(response.headers["x-request-id"]) >= 16
    response = await gql.post("{ viewer { name } }", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    for path in ("/healthz", "/readyz"):
        assert "x-request-id" in (await http.get(path)).headers
    assert "x-request-id" in (await http.post("/graphql", json={})).headers  # 401 too


async def test_unexpected_errors_are_masked_and_logged_with_the_request_id(gql, monkeypatch, caplog):
    async def broken(query):
        raise RuntimeError("password=hunter2 at /secret/path")

    monkeypatch.setattr(inventory, "certificate_stats", broken)
    with caplog.at_level(logging.ERROR, logger="ctops.graphql"):
        response = await gql.post("{ viewer { name } certificateStats { total } }")
    body = response.json()
    assert body["data"] is None or body["data"].get("viewer") == {"name": "admin"}
    [error] = body["errors"]
    assert error["message"] == "Internal error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert "hunter2" not in response.text and "Traceback" not in response.text
    logged = [r for r in caplog.records if response.headers["x-request-id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_domain_errors_keep_their_code(gql):
    body = await gql.execute('{ certificate(id: "bm9wZQ") { id } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = await gql.execute("{ certificates(first: 1000) { totalCount } }")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = await gql.execute("{ nope }")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_query_depth_limit(gql):
    def nested(levels: int) -> str:
        return "{ certificates { edges { node { " + "renewedFrom { " * levels + "id" + " }" * levels + " } } } }"

    # depth counts from 0 at the root field: renewedFrom x 10 puts `id` at depth 13, over the default 12
    deep = nested(10)
    assert await gql.error_codes(deep) == ["BAD_USER_INPUT"]
    ok = nested(9)
    assert (await gql.execute(ok)).get("errors") is None


async def test_alias_limit(gql):
    many = "{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(31)) + " }"
    codes = await gql.error_codes(many)
    assert codes and set(codes) == {"BAD_USER_INPUT"}
    fine = "{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(30)) + " }"
    assert (await gql.execute(fine)).get("errors") is None


async def test_token_limit(app_factory, admin_token):
    async with await client_for(app_factory(max_query_tokens=50)) as http:
        query = "{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(20)) + " }"
        response = await http.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {admin_token}"})
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_body_limit_answers_413_json(app_factory, admin_token, make_token):
    async with await client_for(app_factory(max_body_bytes=4096, agent_max_body_bytes=65536)) as http:
        auth = {"Authorization": f"Bearer {admin_token}", "content-type": "application/json"}
        big = json.dumps({"query": "{ viewer { name } }", "variables": {"pad": "x" * 5000}})
        response = await http.post("/graphql", content=big, headers=auth)
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"
        # without a content-length (streamed): still 413 JSON
        async def chunks():
            for _ in range(10):
                yield b"x" * 1000

        response = await http.post("/graphql", content=chunks(), headers=auth)
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"
        small = json.dumps({"query": "{ viewer { name } }", "variables": {"pad": "x" * 3000}})
        response = await http.post("/graphql", content=small, headers=auth)
        assert response.status_code == 200
        # an AGENT token has the larger limit: the same large body reaches GraphQL
        from tests.support import inventory as inv

        agent = await make_token(Role.AGENT, host_id=(await inv.host("agent-host.test")).id)
        response = await http.post("/graphql", content=big, headers={**auth, "Authorization": f"Bearer {agent}"})
        assert response.status_code == 200 and response.json()["data"]["viewer"]["name"].startswith("agent")
        huge = json.dumps({"query": "{ viewer { name } }", "variables": {"pad": "x" * 70000}})
        response = await http.post("/graphql", content=huge, headers={**auth, "Authorization": f"Bearer {agent}"})
        assert response.status_code == 413


async def test_graphql_over_get_is_off_and_graphiql_only_when_enabled(app_factory, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    async with await client_for(app_factory()) as http:
        response = await http.get("/graphql", params={"query": "{ viewer { name } }"}, headers=auth)
        assert response.status_code in (404, 405, 400)
        assert "admin" not in response.text
    async with await client_for(app_factory(graphiql=True)) as http:
        response = await http.get("/graphql", headers={**auth, "accept": "text/html"})
        assert response.status_code == 200 and "graphiql" in response.text.lower()
        response = await http.get("/graphql", params={"query": "{ viewer { name } }"}, headers=auth)
        assert "admin" not in response.text


async def test_introspection_can_be_turned_off(app_factory, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    query = {"query": "{ __schema { queryType { name } } }"}
    async with await client_for(app_factory()) as http:
        assert (await http.post("/graphql", json=query, headers=auth)).json()["data"]["__schema"]
    async with await client_for(app_factory(public_schema=False)) as http:
        body = (await http.post("/graphql", json=query, headers=auth)).json()
        assert body.get("data") is None and body["errors"]


async def test_cors_preflight_and_headers(app_factory, admin_token):
    async with await client_for(app_factory(cors_origins=("https://dash.example",))) as http:
        preflight = await http.options(
            "/graphql",
            headers={
                "Origin": "https://dash.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        response = await http.post(
            "/graphql", json={"query": "{ viewer { name } }"},
            headers={"Origin": "https://dash.example", "Authorization": f"Bearer {admin_token}"},
        )
        assert response.headers["access-control-allow-origin"] == "https://dash.example"
        other = await http.options(
            "/graphql", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    async with await client_for(app_factory()) as http:  # none by default
        response = await http.post(
            "/graphql", json={"query": "{ viewer { name } }"},
            headers={"Origin": "https://dash.example", "Authorization": f"Bearer {admin_token}"},
        )
        assert "access-control-allow-origin" not in response.headers


async def test_healthz_and_readyz(http, database):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    body = ready.json()
    assert body["database"]["ok"] is True
    assert body["database"]["backend"] == database.backend
    # nothing has beaten yet in this test database: not ready, and it says why
    assert ready.status_code == 503 and body["heartbeat"]["ok"] is False
    from backend.services import heartbeat

    await heartbeat.beat(heartbeat.EMBEDDED)
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["heartbeat"]["ok"] is True
    assert ready.json()["clock"]["shifted"] is False


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_needs_no_token(http, path):
    assert (await http.get(path)).status_code in (200, 503)
