"""The bus: publish after commit (never after a rollback), in memory and through Redis."""

from __future__ import annotations

import asyncio

import pytest

from backend import clock, db
from backend.bus import MemoryBus, RedisBus
from backend.models import Host
from backend.services import tokens


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.arrived = asyncio.Event()

    def __call__(self, topic: str, payload: dict) -> None:
        self.messages.append((topic, payload))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[tuple[str, dict]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < count:
            self.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.messages)} of {count} messages after {timeout} s: {self.messages}")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.messages


@pytest.fixture
def memory_bus():
    bus = MemoryBus()
    recorder = Recorder()
    bus.add_listener(recorder)
    db.set_publisher(bus.publish)
    yield recorder
    db.set_publisher(None)


async def new_host(name: str) -> Host:
    return await Host.create(hostname=name, created_at=clock.now())


async def test_published_once_when_the_outermost_transaction_commits(database, memory_bus):
    async with db.transaction():
        await new_host("a.test")
        db.after_commit("events", {"ids": [1]})
        async with db.transaction():  # a nested call joins
            await new_host("b.test")
            db.after_commit("events", {"ids": [2]})
        assert memory_bus.messages == []  # not at the inner block's exit
    assert memory_bus.messages == [("events", {"ids": [1]}), ("events", {"ids": [2]})]


async def test_a_rollback_publishes_nothing(database, memory_bus):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction():
            await new_host("c.test")
            async with db.transaction():  # a nested service call that succeeded...
                await new_host("d.test")
                db.after_commit("events", {"ids": [3]})
            raise Boom  # ...then the outer transaction rolls back
    assert memory_bus.messages == []
    assert await Host.filter(hostname__in=["c.test", "d.test"]).count() == 0
    # and the next transaction publishes only its own
    async with db.transaction():
        db.after_commit("events", {"ids": [4]})
    assert memory_bus.messages == [("events", {"ids": [4]})]


async def test_outside_a_transaction_it_is_sent_at_once(memory_bus):
    db.after_commit("events", {"ids": [5]})
    assert memory_bus.messages == [("events", {"ids": [5]})]


async def test_revoking_a_token_publishes_it(database, memory_bus):
    created = await tokens.create_token("soon-gone", "VIEWER")
    await tokens.revoke_token(name="soon-gone")
    assert ("tokens", {"revoked": [created.token.id]}) in memory_bus.messages


async def test_a_failing_listener_does_not_stop_the_others():
    bus = MemoryBus()
    recorder = Recorder()

    def broken(topic, payload):
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(recorder)
    bus.publish("events", {"ids": [1]})
    assert recorder.messages == [("events", {"ids": [1]})]


async def test_redis_reaches_the_other_process_and_survives_a_restart(private_redis):
    """Two buses stand for two processes: what one publishes, the other hears;
    each hears its own at once. Redis restarts: the subscriber reconnects (and
    says so, so the feed can catch up), and messages published meanwhile wait
    in the publisher's outbox."""
    a = RedisBus(private_redis.url, backoff_max=0.5)
    b = RedisBus(private_redis.url, backoff_max=0.5)
    heard_a, heard_b = Recorder(), Recorder()
    a.add_listener(heard_a)
    b.add_listener(heard_b)
    reconnected = asyncio.Event()
    b.add_reconnect_listener(reconnected.set)
    await a.start()
    await b.start()
    try:
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
        a.publish("events", {"ids": [1]})
        assert heard_a.messages == [("events", {"ids": [1]})]  # locally, at once, not twice
        assert await heard_b.wait_for(1) == [("events", {"ids": [1]})]
        await asyncio.sleep(0.2)
        assert heard_a.messages == [("events", {"ids": [1]})]

        private_redis.stop()
        await asyncio.sleep(0.5)
        a.publish("events", {"ids": [2]})  # Redis is down: it waits in the outbox
        private_redis.start()
        await asyncio.wait_for(reconnected.wait(), 15)
        b_before = len(heard_b.messages)
        a.publish("events", {"ids": [3]})
        messages = await heard_b.wait_for(b_before + 1, timeout=15)
        assert ("events", {"ids": [3]}) in messages
        assert await a.flush(10)
        assert b.connections >= 2
    finally:
        await a.close()
        await b.close()


async def test_publish_only_bus_flushes_before_closing(private_redis):
    listener = RedisBus(private_redis.url)
    heard = Recorder()
    listener.add_listener(heard)
    await listener.start()
    await asyncio.wait_for(listener.connected.wait(), 10)
    try:
        publisher = RedisBus(private_redis.url, listen=False)
        await publisher.start()
        for i in range(50):
            publisher.publish("events", {"ids": [i]})
        await publisher.close()  # a CLI command exiting
        messages = await heard.wait_for(50)
        assert [p["ids"][0] for _, p in messages] == list(range(50))  # in order
    finally:
        await listener.close()
