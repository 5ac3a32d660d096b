"""A small GraphQL client over any httpx client (ASGI or a real server)."""

from __future__ import annotations

from typing import Any

import httpx


class GraphQLClient:
    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    def with_token(self, token: str | None) -> GraphQLClient:
        return GraphQLClient(self.http, token)

    async def post(self, query: str, variables: dict | None = None, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        token = token if token is not None else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers, **kw)

    async def execute(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        """The whole response body (data and errors)."""
        response = await self.post(query, variables, token)
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response.json()

    async def data(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        """``data``, asserting there were no errors."""
        body = await self.execute(query, variables, token)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def error_codes(self, query: str, variables: dict | None = None, token: str | None = None) -> list[str]:
        body = await self.execute(query, variables, token)
        return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
