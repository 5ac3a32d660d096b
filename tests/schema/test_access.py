"""Permissions: every field has a rule; each role sees what it may and nothing more."""

from __future__ import annotations

from graphql import GraphQLInterfaceType, GraphQLObjectType

from backend.models import Role
from backend.schema.api import build_schema
from backend.schema.core.access import ADMIN, READ, build_access_map
from backend.services import tokens


def test_every_field_of_the_schema_has_a_rule():
    schema = build_schema()._schema
    rules = build_access_map(schema)  # raises on any unguarded field
    walked = 0
    for name, gql_type in schema.type_map.items():
        if name.startswith("__") or not isinstance(gql_type, (GraphQLObjectType, GraphQLInterfaceType)):
            continue
        for field_name in gql_type.fields:
            assert (name, field_name) in rules, f"{name}.{field_name} has no permission rule"
            assert rules[(name, field_name)], f"{name}.{field_name} is open to no role"
            walked += 1
    assert walked > 100
    # spot checks of the contract
    assert rules[("Query", "certificates")] == READ
    assert rules[("Query", "apiTokens")] == ADMIN
    assert rules[("Mutation", "createApiToken")] == ADMIN
    assert Role.AGENT not in rules[("Query", "certificates")]
    assert Role.ENROLLMENT not in rules[("Certificate", "pem")]


def test_an_unguarded_field_is_refused_at_build_time():
    import strawberry

    @strawberry.type
    class Query:
        leak: str = "secret"

    try:
        build_access_map(strawberry.Schema(query=Query)._schema)
    except LookupError as exc:
        assert "Query.leak" in str(exc)
    else:
        raise AssertionError("an unguarded field was accepted")


async def test_no_token_bad_token_revoked_token_get_401_json(http, make_token):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        response = await http.post("/graphql", json={"query": "{ viewer { name } }"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "Traceback" not in response.text
    secret = await make_token(Role.VIEWER, "soon-revoked")
    ok = await http.post("/graphql", json={"query": "{ viewer { name } }"}, headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 200 and ok.json()["data"]["viewer"]["name"] == "soon-revoked"
    await tokens.revoke_token(name="soon-revoked")
    revoked = await http.post("/graphql", json={"query": "{ viewer { name } }"}, headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401
    # The same body for an unknown token and a revoked one: no hint which part was wrong.
    unknown = await http.post("/graphql", json={"query": "{ viewer { name } }"}, headers={"Authorization": "Bearer x"})
    assert revoked.json() == unknown.json()


async def test_roles(gql, make_token):
    viewer = await make_token(Role.VIEWER)
    editor = await make_token(Role.EDITOR)
    assert (await gql.data("{ certificates { totalCount } }", token=viewer))["certificates"]["totalCount"] == 0
    assert await gql.error_codes("{ apiTokens { totalCount } }", token=viewer) == ["FORBIDDEN"]
    assert await gql.error_codes("{ apiTokens { totalCount } }", token=editor) == ["FORBIDDEN"]
    create = 'mutation { createApiToken(input: {name: "x", role: VIEWER}) { token } }'
    assert await gql.error_codes(create, token=editor) == ["FORBIDDEN"]
    # a forbidden field anywhere in the document refuses the whole operation, before anything runs
    body = await gql.execute("{ viewer { name } apiTokens { totalCount } }", token=viewer)
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # ...including inside fragments
    frag = "query { ...F } fragment F on Query { apiTokens { totalCount } }"
    assert await gql.error_codes(frag, token=viewer) == ["FORBIDDEN"]
    # ADMIN can
    data = await gql.data(create)
    assert data["createApiToken"]["token"].startswith("ctops_")


async def test_token_lifecycle_over_the_api(gql):
    created = (await gql.data(
        'mutation { createApiToken(input: {name: "dash", role: VIEWER}) { token apiToken { id name role revokedAt } } }'
    ))["createApiToken"]
    secret, token_id = created["token"], created["apiToken"]["id"]
    assert created["apiToken"]["revokedAt"] is None
    listed = (await gql.data("{ apiTokens { totalCount edges { node { name role } } } }"))["apiTokens"]
    assert {"name": "dash", "role": "VIEWER"} in [e["node"] for e in listed["edges"]]
    assert secret not in str(listed)
    assert (await gql.data("{ viewer { name } }", token=secret))["viewer"]["name"] == "dash"
    revoked = (await gql.data("mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }", {"id": token_id}))
    assert revoked["revokeApiToken"]["revokedAt"] is not None
    response = await gql.post("{ viewer { name } }", token=secret)
    assert response.status_code == 401
    assert await gql.error_codes(
        'mutation { createApiToken(input: {name: "dash", role: VIEWER}) { token } }') == ["BAD_USER_INPUT"]
    assert await gql.error_codes(
        "mutation($id: ID!) { revokeApiToken(id: $id) { name } }", {"id": "QXBpVG9rZW46OTk5"}) == ["NOT_FOUND"]


async def test_tokens_are_stored_as_hashes(gql):
    secret = (await gql.data('mutation { createApiToken(input: {name: "h", role: VIEWER}) { token } }'))[
        "createApiToken"]["token"]
    from backend.models import ApiToken

    row = await ApiToken.get(name="h")
    assert row.token_hash == tokens.hash_secret(secret)
    assert secret not in repr(await ApiToken.filter(name="h").values())
