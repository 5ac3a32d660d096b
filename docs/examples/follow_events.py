"""Follow certificate events live, resuming where it left off after a disconnect.

    pip install websockets
    python follow_events.py ws://127.0.0.1:8000/graphql TOKEN [--types RENEWED EXPIRED] [--max-events N]

Prints one line per event. Each event carries its ``cursor``; after a
disconnect (a restart, a network cut, or 1013 when this client fell behind)
it subscribes again with ``after`` set to the last cursor, so the server
sends what was missed before the live events.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

QUERY = """
subscription Follow($types: [CertificateEventType!], $after: String) {
  certificateEvents(filter: { types: $types }, after: $after) {
    cursor
    type
    occurredAt
    host { hostname }
    certificate { commonName notAfter status }
  }
}
"""


async def follow(url: str, token: str, types: list[str] | None = None, max_events: int | None = None) -> None:
    after = None  # the cursor of the last event received
    seen = 0
    while True:
        try:
            async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
                ack = json.loads(await ws.recv())
                assert ack["type"] == "connection_ack", ack
                variables = {"types": types, "after": after}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": variables}}))
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                    elif message["type"] == "error":
                        raise SystemExit(f"subscription refused: {message['payload']}")
                    elif message["type"] == "next":
                        event = message["payload"]["data"]["certificateEvents"]
                        after = event["cursor"]
                        host = (event["host"] or {}).get("hostname", "-")
                        cert = event["certificate"]
                        print(f"{event['occurredAt']}  {event['type']:<17} {cert['commonName']}  {host}  {cert['status']}", flush=True)
                        seen += 1
                        if max_events is not None and seen >= max_events:
                            return
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            if code == 4403:
                raise SystemExit("the server refused the token (missing, wrong or revoked)") from None
            print(f"disconnected ({code}); resuming after {after}", flush=True)
        except OSError as exc:
            print(f"cannot reach the server ({exc}); retrying", flush=True)
        await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description="Follow certificate events live.")
    parser.add_argument("url", help="ws://host:port/graphql (wss:// behind TLS)")
    parser.add_argument("token", help="a VIEWER (or EDITOR, ADMIN) token")
    parser.add_argument("--types", nargs="*", help="only these event types, e.g. RENEWED EXPIRED")
    parser.add_argument("--max-events", type=int, help="stop after this many events")
    args = parser.parse_args()
    asyncio.run(follow(args.url, args.token, args.types or None, args.max_events))


if __name__ == "__main__":
    main()
