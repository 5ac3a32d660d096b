"""The event bus: what a service committed reaches every process's subscribers.

Services never call the bus: :func:`backend.db.transaction` hands it the
messages of a transaction once the outermost block has committed (a rollback
sends nothing). Messages are ``(topic, payload)`` with ids, never objects:

- ``events``  ``{"ids": [event id, ...]}``  certificate events just recorded
- ``tokens``  ``{"revoked": [token id, ...]}``  open connections of these tokens close
- ``alerts``  ``{"changes": [{"id", "change", "severity"}, ...]}``  alert state changes (``alertEvents``)

Two implementations with one interface:

- :class:`MemoryBus` (embedded mode): listeners are called at once, in-process.
- :class:`RedisBus` (``REDIS_URL`` set): one ``PUBLISH`` per message on
  ``ctops:events``; one subscriber task per process that fans every message out
  to the process's listeners and reconnects with backoff when Redis goes away.
  A process's own messages reach its own listeners at once (not through Redis),
  so they are not lost while Redis is down; messages published while Redis is
  unreachable wait in a bounded outbox and go out when it is back.

Pub/sub has no memory: a process that is disconnected from Redis misses what
others publish meanwhile. Listeners are told when the subscription comes back
(:meth:`Bus.add_reconnect_listener`) so they can catch up from the database
(the live feed does, see ``backend/schema/core/live.py``).

``publish`` never blocks and never raises: a full outbox drops the message
(counted in ``ctops_bus_dropped_total``) rather than slow down a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from backend import metrics

log = logging.getLogger("ctops.bus")

CHANNEL = "ctops:events"
OUTBOX_LIMIT = 10_000

Listener = Callable[[str, dict], None]


class Bus:
    """Local fan-out shared by both implementations."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._reconnect_listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Listener) -> None:
        """``listener(topic, payload)`` is called in the event loop for every
        message; it must not block (queue the work, return)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        """Called after the bus lost messages (its subscription came back)."""
        self._reconnect_listeners.append(listener)

    def _deliver(self, topic: str, payload: dict) -> None:
        for listener in list(self._listeners):
            try:
                listener(topic, payload)
            except Exception:  # a broken listener must not stop the others
                log.exception("Bus listener failed on %s", topic)

    def _reconnected(self) -> None:
        for listener in list(self._reconnect_listeners):
            try:
                listener()
            except Exception:
                log.exception("Bus reconnect listener failed")

    def publish(self, topic: str, payload: dict) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Begin listening (and, for Redis, publishing)."""

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has left this process."""
        return True

    async def close(self) -> None:
        """Flush (bounded) and stop."""


class MemoryBus(Bus):
    """One process: listeners hear every message at once."""

    def publish(self, topic: str, payload: dict) -> None:
        self._deliver(topic, payload)


class RedisBus(Bus):
    """Redis pub/sub on one channel; ``listen=False`` for processes that only
    publish (workers, CLI commands)."""

    def __init__(
        self,
        url: str,
        *,
        listen: bool = True,
        channel: str = CHANNEL,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.listen = listen
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connected = asyncio.Event()
        self.connections = 0  # successful subscriptions so far (1 + reconnects)
        self._outbox: asyncio.Queue[str] | None = None
        self._tasks: list[asyncio.Task] = []
        self._publisher_client: Any = None

    def _client(self) -> Any:
        from redis.asyncio import Redis

        return Redis.from_url(
            self.url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=10
        )

    # --- publishing ----------------------------------------------------------------

    def publish(self, topic: str, payload: dict) -> None:
        if self.listen:
            self._deliver(topic, payload)  # our own listeners need not wait for Redis
        if self._outbox is None:
            log.warning("Bus not started: %s message not sent to Redis", topic)
            metrics.BUS_DROPPED.inc()
            return
        message = json.dumps({"o": self.origin, "t": topic, "p": payload}, separators=(",", ":"))
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            metrics.BUS_DROPPED.inc()
            log.error("Bus outbox full (%d messages): a %s message was dropped", OUTBOX_LIMIT, topic)

    async def _publish_loop(self) -> None:
        assert self._outbox is not None
        backoff = self.backoff_initial
        client = self._publisher_client = self._client()
        while True:
            message = await self._outbox.get()
            try:
                while True:
                    try:
                        await client.publish(self.channel, message)
                        backoff = self.backoff_initial
                        break
                    except (OSError, ConnectionError, TimeoutError, RedisError) as exc:
                        log.warning("Redis publish failed (%s); retrying in %.1f s", type(exc).__name__, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, self.backoff_max)
            finally:
                self._outbox.task_done()

    # --- listening -----------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = self.backoff_initial
        while True:
            client = self._client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connections += 1
                self.connected.set()
                if self.connections > 1:
                    log.info("Redis subscription restored")
                    self._reconnected()
                backoff = self.backoff_initial
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is not None:
                        self._on_redis_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, TimeoutError, RedisError) as exc:
                if self.connected.is_set():
                    log.warning("Lost the Redis subscription (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _on_redis_message(self, data: Any) -> None:
        try:
            message = json.loads(data)
            origin, topic, payload = message["o"], message["t"], message["p"]
        except (TypeError, ValueError, KeyError):
            log.warning("Ignored a malformed bus message")
            return
        if origin == self.origin:
            return  # delivered locally when published
        self._deliver(topic, payload)

    # --- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._outbox = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="ctops:bus-publish"))
        if self.listen:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="ctops:bus-listen"))

    async def flush(self, timeout: float = 5.0) -> bool:
        if self._outbox is None:
            return True
        try:
            await asyncio.wait_for(self._outbox.join(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        if self._outbox is not None and not await self.flush():
            log.warning("Bus closed with %d unsent messages", self._outbox.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._publisher_client is not None:
            with contextlib.suppress(Exception):
                await self._publisher_client.aclose()
            self._publisher_client = None
        self._outbox = None


def create_bus(redis_url: str | None, *, listen: bool = True) -> Bus:
    """The bus for this process: Redis when configured, else in-memory."""
    return RedisBus(redis_url, listen=listen) if redis_url else MemoryBus()
