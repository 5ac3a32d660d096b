"""A small graphql-transport-ws client over the `websockets` library, for tests.

Real websocket connections to a real server: ``connection_init`` with the
token, ``subscribe``, then ``next`` messages per operation id. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROTOCOL = "graphql-transport-ws"


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class LiveClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._messages: dict[str, collections.deque[dict]] = collections.defaultdict(collections.deque)
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self.closed: Closed | None = None

    @classmethod
    async def open(cls, url: str, token: str | None, *, payload: dict | None = None, timeout: float = 10, **kw: Any) -> LiveClient:
        """Connect and initialise; raises :class:`Closed` when the server refuses."""
        ws = await connect(url, subprotocols=[PROTOCOL], open_timeout=timeout, **kw)
        client = cls(ws)
        init = payload if payload is not None else ({"authorization": f"Bearer {token}"} if token else {})
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        try:
            ack = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except ConnectionClosed as exc:
            await ws.close()
            raise Closed(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "") from None
        assert ack["type"] == "connection_ack", ack
        client._reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                self._messages[message.get("id", "")].append(message)
                self._arrived.set()
        except ConnectionClosed:
            pass
        rcvd = self.ws.close_code
        self.closed = Closed(rcvd, self.ws.close_reason or "")
        self._arrived.set()

    async def subscribe(self, query: str, variables: dict | None = None) -> str:
        op_id = str(next(self._ids))
        await self.ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
        )
        return op_id

    async def message(self, op_id: str, timeout: float = 10) -> dict:
        """The next message (next / error / complete) of one operation."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._messages[op_id]:
            if self.closed is not None:
                raise self.closed
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no message for operation {op_id} within {timeout} s")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self._messages[op_id].popleft()

    async def next(self, op_id: str, timeout: float = 10) -> dict:
        """The next ``next`` payload's data; fails on an error or complete."""
        message = await self.message(op_id, timeout)
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message["payload"]["errors"]
        return message["payload"]["data"]

    async def nothing(self, op_id: str, seconds: float) -> None:
        """Assert no message arrives for ``op_id`` within ``seconds``."""
        try:
            message = await self.message(op_id, seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {message}")

    async def wait_closed(self, timeout: float = 10) -> Closed:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.closed is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {timeout} s")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.closed

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


@contextlib.asynccontextmanager
async def live_client(url: str, token: str | None, **kw: Any):
    client = await LiveClient.open(url, token, **kw)
    try:
        yield client
    finally:
        await client.close()
