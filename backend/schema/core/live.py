"""Live delivery in one API process: from the bus to websocket subscriptions.

One :class:`LiveFeed` per process listens to the bus. For each ``events``
message it loads the events once (one query for the batch) and hands them, with
one set of dataloaders for the batch, to every subscription whose filter
accepts them: one load per event per process, whatever the number of
subscribers. Each subscription then resolves its own selection with those
shared loaders (see ``backend/schema/core/execution.py``); field permissions were
checked per subscriber when it subscribed.

Each websocket connection (:class:`LiveConnection`) has a bounded queue
(``CTOPS_SUBSCRIPTION_QUEUE_SIZE`` events over all its subscriptions). Handing an
event to a subscription never waits: when the connection's queue is full the
connection is closed with 1013 "slow consumer: reconnect and re-query" and the
others carry on.

Gaps. The feed remembers the ids it has handed out (a bounded window) and the
highest one. When the bus reports that it lost messages (the Redis subscription
came back after an outage) and, in embedded mode, every
``CTOPS_LIVE_CATCH_UP_TICK_SECONDS`` (a CLI command in another process has no
bus to the server), it reads the events recorded since then from the database
and hands out those it has not handed out yet. More than
:data:`CATCH_UP_LIMIT` missing events closes every connection with 1013.

Tokens. Connections of a token revoked through the API (the ``tokens`` topic)
close at once with 4403 "token revoked"; every ``CTOPS_WS_AUTH_RECHECK_SECONDS``
the feed also re-checks the tokens of its open connections in the database
(revocations by a CLI command in embedded mode, or during a Redis outage).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from backend import metrics
from backend.models import ApiToken
from backend.models import CertificateEvent as EventModel
from backend.schema.core.execution import Delivery
from backend.schema.loaders import Loaders
from backend.settings import Settings

log = logging.getLogger("ctops.live")

SLOW_CONSUMER = (1013, "slow consumer: reconnect and re-query")
TOKEN_REVOKED = (4403, "token revoked")
CATCH_UP_LIMIT = 10_000
CATCH_UP_MARGIN = 1_000  # ids below the highest seen that may commit late (PostgreSQL)
RECENT_IDS = 50_000
INBOX_LIMIT = 10_000
YIELD_EVERY = 200  # events handed out between two yields to the event loop


class LiveConnection:
    """One websocket connection: who it is, its queue budget, its subscriptions."""

    def __init__(self, websocket: Any, capacity: int) -> None:
        self.websocket = websocket
        self.capacity = capacity
        self.viewer: Any = None
        self.pending = 0
        self.closed = False
        self.close_code: int | None = None
        self.subscriptions: set[Subscription] = set()
        self._close_task: asyncio.Task | None = None

    def close(self, code: int, reason: str) -> None:
        """Close it now (never waits: the close frame goes out in a task)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for subscription in list(self.subscriptions):
            subscription.stop()
        self._close_task = asyncio.create_task(self._close(code, reason), name="ctops:ws-close")

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)


class Subscription:
    """One subscription's share of its connection's queue."""

    def __init__(self, feed: LiveFeed, connection: LiveConnection, accepts: Callable[[EventModel, Batch], bool], needs_hosts: bool = False) -> None:
        self.feed = feed
        self.connection = connection
        self.accepts = accepts
        self.needs_hosts = needs_hosts
        self._queue: collections.deque[tuple[EventModel, Batch]] = collections.deque()
        self._ready = asyncio.Event()
        self.stopped = False

    def offer(self, event: EventModel, batch: Batch) -> None:
        if self.stopped:
            return
        connection = self.connection
        if connection.pending >= connection.capacity:
            dropped = 1 + connection.pending
            metrics.BUS_DROPPED.inc(dropped)
            log.warning("Slow consumer (%s): closing its connection, %d events dropped", _who(connection), dropped)
            connection.close(*SLOW_CONSUMER)
            return
        self._queue.append((event, batch))
        connection.pending += 1
        self._ready.set()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.connection.pending -= len(self._queue)
        self._queue.clear()
        self._ready.set()

    async def next(self) -> tuple[EventModel, Batch]:
        """The next event. Once stopped (its connection is closing), it waits
        until the transport cancels the operation: ending the stream would
        make strawberry send `complete` on a closed socket."""
        while not self._queue:
            if self.stopped:
                await asyncio.get_running_loop().create_future()  # cancelled with the connection
            self._ready.clear()
            await self._ready.wait()
        self.connection.pending -= 1
        return self._queue.popleft()


class Batch:
    """Events that arrived together, with the loaders all subscribers share and
    the results identical subscriptions share (``backend/schema/core/execution.py``)."""

    def __init__(self, events: list[EventModel]) -> None:
        self.events = events
        self.loaders = Loaders()
        self.shared: dict = {}
        self.live_hosts: dict[int, set[int]] = {}

    def delivery(self, value: Any, event: EventModel) -> Delivery:
        return Delivery(value, self.loaders, self.shared, event.id)


class LiveFeed:
    def __init__(self, settings: Settings, *, catch_up_periodically: bool | None = None) -> None:
        self.settings = settings
        self.connections: set[LiveConnection] = set()
        self.subscriptions: set[Subscription] = set()
        self.catch_up_periodically = settings.embedded if catch_up_periodically is None else catch_up_periodically
        self._inbox: asyncio.Queue[list[int] | None] = asyncio.Queue(maxsize=INBOX_LIMIT)
        self._recent: collections.deque[int] = collections.deque()
        self._recent_set: set[int] = set()
        self._floor = 0  # ids at or below it predate this process
        self._highest = 0
        self._catch_up_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.batches_loaded = 0  # for tests: one load per batch, whatever the subscribers
        # alertEvents' feed (backend/schema/alerts.py), set by the app beside this one.
        self.alerts: Any = None

    # --- the bus side ------------------------------------------------------------------

    def attach(self, bus: Any) -> None:
        bus.add_listener(self.on_message)
        bus.add_reconnect_listener(self.request_catch_up)

    def on_message(self, topic: str, payload: dict) -> None:
        if topic == "events":
            ids = [int(i) for i in payload.get("ids") or ()]
            if ids:
                self._enqueue(ids)
        elif topic == "tokens":
            revoked = {int(i) for i in payload.get("revoked") or ()}
            for connection in list(self.connections):
                if connection.viewer is not None and connection.viewer.token_id in revoked:
                    connection.close(*TOKEN_REVOKED)

    def _enqueue(self, ids: list[int]) -> None:
        try:
            self._inbox.put_nowait(ids)
        except asyncio.QueueFull:
            metrics.BUS_DROPPED.inc(len(ids))
            log.error("Live feed inbox full: closing every subscription connection")
            self.close_all(*SLOW_CONSUMER)

    def request_catch_up(self) -> None:
        self._catch_up_wanted.set()

    # --- the subscription side ---------------------------------------------------------

    def add_connection(self, connection: LiveConnection) -> None:
        self.connections.add(connection)

    def remove_connection(self, connection: LiveConnection) -> None:
        self.connections.discard(connection)
        for subscription in list(connection.subscriptions):
            self.unsubscribe(subscription)

    def subscribe(self, connection: LiveConnection, accepts: Callable[[EventModel, Batch], bool], *, needs_hosts: bool = False) -> Subscription:
        subscription = Subscription(self, connection, accepts, needs_hosts)
        if connection.closed:
            subscription.stop()
            return subscription
        connection.subscriptions.add(subscription)
        self.subscriptions.add(subscription)
        metrics.SUBSCRIPTIONS_ACTIVE.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.stop()
        subscription.connection.subscriptions.discard(subscription)
        if subscription in self.subscriptions:
            self.subscriptions.discard(subscription)
            metrics.SUBSCRIPTIONS_ACTIVE.dec()

    async def stream(self, subscription: Subscription) -> AsyncIterator[tuple[EventModel, Batch]]:
        try:
            while True:
                yield await subscription.next()
        finally:
            self.unsubscribe(subscription)

    def close_all(self, code: int, reason: str) -> None:
        for connection in list(self.connections):
            connection.close(code, reason)

    # --- the work ----------------------------------------------------------------------

    def _remember(self, ids: list[int]) -> list[int]:
        """The ids not handed out before, remembered from now on."""
        fresh = []
        for i in ids:
            if i in self._recent_set:
                continue
            fresh.append(i)
            self._recent.append(i)
            self._recent_set.add(i)
            if i > self._highest:
                self._highest = i
        while len(self._recent) > RECENT_IDS:
            self._recent_set.discard(self._recent.popleft())
        return fresh

    async def _deliver(self, ids: list[int]) -> None:
        fresh = self._remember(ids)
        if not fresh or not self.subscriptions:
            return
        rows = await EventModel.filter(id__in=fresh).order_by("id")
        self.batches_loaded += 1
        batch = Batch(rows)
        if any(s.needs_hosts for s in self.subscriptions):
            batch.live_hosts = await _live_hosts(sorted({e.certificate_id for e in rows}))
        subscriptions = list(self.subscriptions)
        for index, event in enumerate(rows):
            if index and index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a big batch must not hold the event loop
            for subscription in subscriptions:
                if subscription.stopped:
                    continue
                try:
                    accepted = subscription.accepts(event, batch)
                except Exception:
                    log.exception("Subscription filter failed")
                    accepted = False
                if accepted:
                    subscription.offer(event, batch)

    async def _run(self) -> None:
        while True:
            ids = await self._inbox.get()
            if ids is None:
                return
            try:
                await self._deliver(ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Live feed could not deliver %d events", len(ids))

    async def catch_up(self) -> int:
        """Hand out events recorded since the last ones seen; returns how many were new."""
        low = max(self._floor, self._highest - CATCH_UP_MARGIN)
        rows = await EventModel.filter(id__gt=low).order_by("id").limit(CATCH_UP_LIMIT + 1).values_list("id", flat=True)
        ids = [int(i) for i in rows]
        missing = [i for i in ids if i not in self._recent_set]
        if not missing:
            return 0
        if len(ids) > CATCH_UP_LIMIT:
            log.warning("More than %d events to catch up on: closing subscription connections", CATCH_UP_LIMIT)
            self._remember(ids)
            self.close_all(*SLOW_CONSUMER)
            return len(missing)
        self._enqueue(missing)
        return len(missing)

    async def _catch_up_loop(self) -> None:
        tick = self.settings.live_catch_up_tick_seconds
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._catch_up_wanted.wait(), tick if self.catch_up_periodically else None)
            self._catch_up_wanted.clear()
            try:
                found = await self.catch_up()
                if found:
                    log.info("Caught up on %d events from the database", found)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Live feed catch-up failed")

    async def recheck_tokens(self) -> int:
        """Close connections whose token was revoked (or deleted); returns how many."""
        by_token: dict[int, list[LiveConnection]] = collections.defaultdict(list)
        for connection in self.connections:
            if connection.viewer is not None and connection.viewer.token_id is not None and not connection.closed:
                by_token[connection.viewer.token_id].append(connection)
        if not by_token:
            return 0
        alive = set(
            await ApiToken.filter(id__in=list(by_token), revoked_at__isnull=True).values_list("id", flat=True)
        )
        closed = 0
        for token_id, connections in by_token.items():
            if token_id not in alive:
                for connection in connections:
                    connection.close(*TOKEN_REVOKED)
                    closed += 1
        return closed

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ws_auth_recheck_seconds)
            try:
                await self.recheck_tokens()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Token re-check failed")

    async def start(self) -> None:
        highest = await EventModel.all().order_by("-id").limit(1).values_list("id", flat=True)
        self._floor = self._highest = int(highest[0]) if highest else 0
        self._tasks = [
            asyncio.create_task(self._run(), name="ctops:live-feed"),
            asyncio.create_task(self._catch_up_loop(), name="ctops:live-catch-up"),
            asyncio.create_task(self._recheck_loop(), name="ctops:live-token-recheck"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


def for_subscription(context: Any) -> tuple[LiveFeed, LiveConnection]:
    """The feed and connection of a subscription's context; subscriptions are
    served over websockets only (graphql-transport-ws at /graphql)."""
    from backend.errors import BadUserInput

    feed = getattr(context, "live", None)
    connection = getattr(context, "connection", None)
    if feed is None or connection is None:
        raise BadUserInput("Subscriptions are served over websockets: graphql-transport-ws at /graphql.")
    return feed, connection


async def _live_hosts(certificate_ids: list[int]) -> dict[int, set[int]]:
    """certificate id -> ids of the hosts it is present on now."""
    from backend import sql

    if not certificate_ids:
        return {}
    rows = await sql.fetch(
        "SELECT DISTINCT certificate_id, host_id FROM certificate_location"
        f" WHERE certificate_id IN {sql.in_list(certificate_ids)} AND removed_at IS NULL",
        certificate_ids,
    )
    out: dict[int, set[int]] = collections.defaultdict(set)
    for row in rows:
        out[row["certificate_id"]].add(row["host_id"])
    return out


def _who(connection: LiveConnection) -> str:
    viewer = connection.viewer
    return viewer.name if viewer is not None else "anonymous"


async def authenticate_connection(context: Any) -> None:
    """``connection_init``: the viewer comes from the payload's
    ``{"authorization": "Bearer <token>"}``. A missing or bad token, or one whose
    role reads nothing (AGENT, ENROLLMENT), closes the connection with 4403."""
    from strawberry.exceptions import ConnectionRejectionError

    from backend.schema.core.access import READ
    from backend.services import tokens

    params = context.connection_params or {}
    header = params.get("authorization") or params.get("Authorization") or ""
    scheme, _, secret = str(header).partition(" ")
    secret = secret.strip()
    viewer = await tokens.authenticate(secret) if scheme.lower() == "bearer" and secret else None
    if viewer is None or viewer.role not in READ:
        raise ConnectionRejectionError()
    context.viewer = viewer
    connection = context.connection
    if connection is not None:
        connection.viewer = viewer
        if context.live is not None:
            context.live.add_connection(connection)


class MessageEncoder:
    """JSON for websocket messages, encoding a shared result once.

    Subscribers of one operation get the same result object for an event
    (``backend/schema/core/execution.py``): its JSON is made once and each
    subscriber's ``next`` message wraps it with its own operation id. A few
    recent results are remembered (holding them keeps their ids unique).
    """

    def __init__(self, encode: Callable[[Any], str], remember: int = 64) -> None:
        self._encode = encode
        self._remember = remember
        self._recent: collections.OrderedDict[int, tuple[Any, str]] = collections.OrderedDict()

    def __call__(self, message: Any) -> str:
        if type(message) is dict and message.get("type") == "next":
            payload = message.get("payload")
            if type(payload) is dict and len(payload) == 1 and "data" in payload:
                return f'{{"id":{self._encode(message["id"])},"type":"next","payload":{{"data":{self._data(payload["data"])}}}}}'
        return self._encode(message)

    def _data(self, data: Any) -> str:
        found = self._recent.get(id(data))
        if found is not None and found[0] is data:
            return found[1]
        encoded = self._encode(data)
        self._recent[id(data)] = (data, encoded)
        if len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return encoded
